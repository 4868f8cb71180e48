"""What the docs' reference pages and results tables are made of: functions that `cog` calls inside
the pages and the README (`cog -r -I docs README.md docs/**/*.md` writes them, `cog --check` fails
when a page is stale).

Every reference comes from the code itself (the argument parser, the scenario schema, the profiles,
the output columns, the exit codes), and every results table from a file under results/, so a page
cannot drift from what the code does or what a benchmark measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fleet.cli import EXIT_CODES, build_parser  # noqa: E402
from fleet.config import dotted_keys, scenario_schema  # noqa: E402
import tables  # noqa: E402  (benchmarks/tables.py: the results tables)


# --------------------------------------------------------------------------- the command line


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, help) of every subcommand, nested ones (`bench sparcl`) by their full name."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                nested = _subcommands(sub)
                if nested:
                    out += [(f"{name} {n}", p, h) for n, p, h in nested]
                else:
                    out.append((name, sub, helps.get(name, "")))
    return out


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def cli_reference() -> str:
    """Every `fleet` subcommand: what it does, its usage and its arguments, from the real parser."""
    lines = []
    for name, sub, help_text in _subcommands(build_parser()):
        lines += [f"## fleet {name}", "", _cell(help_text).replace("%%", "%") + ".", "", "```text",
                  " ".join(sub.format_usage().split()).replace("usage: ", ""), "```", "",
                  "| argument | meaning | default |", "|---|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = ", ".join(action.option_strings) or action.dest
            default = "" if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings \
                else f"`{action.default}`"
            helped = (action.help or "").replace("%%", "%")
            lines.append(f"| `{names}` | {_cell(helped)} | {default} |")
        lines.append("")
    return "\n".join(lines)


def exit_codes() -> str:
    """The exit statuses of `fleet`, from fleet.cli.EXIT_CODES."""
    return "\n".join(["| status | meaning |", "|---|---|", *(f"| {code} | {_cell(text)} |"
                                                          for code, text in EXIT_CODES.items())])


# --------------------------------------------------------------------------- scenarios and profiles


def _schema_row(key: str, node: dict) -> str:
    options = node.get("anyOf", [node])
    kinds, bounds = [], []
    for option in options:
        if "$ref" in option:
            kinds.append("section")
            continue
        kind = option.get("type", "")
        if kind == "object" and isinstance(option.get("additionalProperties"), dict):
            value = option["additionalProperties"]
            kind = "table of " + ("sections" if "anyOf" in value or "$ref" in value else value.get("type", "?"))
        kinds.append(kind)
        if "enum" in option:
            bounds.append(" \\| ".join(f"`{v}`" for v in option["enum"]))
        for word, symbol in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                             ("exclusiveMaximum", "<")):
            if word in option:
                bounds.append(f"{symbol} {option[word]}")
    default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
    return f"| `{key}` | {' or '.join(dict.fromkeys(kinds))} | {', '.join(bounds)} | {default} |"


def scenario_reference() -> str:
    """Every scenario key with its type, choices or bounds and default, from the JSON Schema."""
    schema = scenario_schema()
    defs = schema["$defs"]

    def plain(node: dict) -> dict:
        """The node itself: its non-null option, its definition for a reference."""
        if "anyOf" in node:
            node = next(o for o in node["anyOf"] if o != {"type": "null"})
        return defs[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    def node_of(dotted: str) -> dict:
        node = schema
        for part in dotted.split("."):
            node = plain(node)
            node = node["additionalProperties"] if part == "<name>" else node["properties"][part]
        return node

    lines = ["| key | type | choices, bounds | default |", "|---|---|---|---|"]
    lines += [_schema_row(key, node_of(key)) for key in dotted_keys()]
    return "\n".join(lines)


def profiles_reference() -> str:
    """`fleet profiles` and `fleet profiles --sources`, as they print."""
    out = []
    for args in ([], ["--sources"]):
        text = subprocess.run([sys.executable, "-m", "fleet.cli", "profiles", *args], capture_output=True,
                              text=True, check=True, cwd=ROOT).stdout
        out += [f"`fleet profiles {' '.join(args)}`".replace(" `", "`"), "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- outputs


def output_columns() -> str:
    """The columns of every CSV a run or a comparison writes, from the constants that write them."""
    from fleet.run.compare import COLUMNS as COMPARISON, PAIRED_ORDER
    from fleet.run.runner import BASE_COLUMNS
    from fleet.world.ledger import DEVICE_COLUMNS
    from server.bookkeeping import DEVICE_ROUND_COLUMNS
    from server.buffered import ARRIVAL_COLUMNS

    tables = [("rounds.csv", [*BASE_COLUMNS, "acc_task_<t>", "til_task_<t>", "..."],
               "one row per round (per version in async mode), appended and flushed as it ends"),
              ("devices.csv", DEVICE_COLUMNS,
               "one row per device: its totals over the run (async: the arrivals after the last version too)"),
              ("device_rounds.csv", DEVICE_ROUND_COLUMNS, "one row per device and round it was sampled in"),
              ("arrivals.csv", ARRIVAL_COLUMNS, "async mode: one row per update that reached the server"),
              ("comparison.csv", COMPARISON, "`fleet compare`: one row per variant (and seed)"),
              ("paired.csv", PAIRED_ORDER, "`fleet compare --seeds`: per variant and figure, over seeds")]
    lines = []
    for name, columns, what in tables:
        lines += [f"### {name}", "", f"{what}.", "", ", ".join(f"`{c}`" for c in columns), ""]
    return "\n".join(lines)


def run_files() -> str:
    from fleet.outputs import RUN_FILES, RUN_FOLDERS

    return ", ".join(f"`{name}`" for name in (*RUN_FILES, *(f"{d}/" for d in RUN_FOLDERS)))


# --------------------------------------------------------------------------- results


def text_file(path: str) -> str:
    """A text file under results/ (a benchmark's printed tables) as a code block."""
    return "```text\n" + (ROOT / path).read_text().rstrip() + "\n```"


def transcript_section(path: str, heading: str, indent: int = 0) -> str:
    """The part of a benchmark's transcript under results/ from the comment line that starts with `# heading`
    up to the next comment line, as a code block (indented to sit inside a list item)."""
    lines = (ROOT / path).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {heading}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ")), len(lines))
    body = [line for line in lines[start:end] if line.strip()]
    return "\n".join(" " * indent + line for line in ["```text", *body, "```"])


def seed_table(path: str) -> str:
    """One `fleet bench sparcl --json` report's Class-IL, arm by arm and seed by seed."""
    return tables.per_seed(ROOT / path)


def paired_deltas(folder: str) -> str:
    """A comparison's paired.csv (`fleet compare --seeds`): differences from its first variant."""
    return f"`{folder}/paired.csv`\n\n" + tables.delta_table(ROOT / folder / "paired.csv")


def paired_medians(folder: str) -> str:
    """A comparison's paired.csv: every variant's median [95% interval] and its paired difference."""
    return f"`{folder}/paired.csv`\n\n" + tables.seeds_table(ROOT / folder / "paired.csv")


def norm_ablation() -> str:
    """The normalisation ablation (benchmarks/tables.py), paired by seed."""
    return tables.norm_ablation()


def markdown_file(path: str) -> str:
    """A benchmark's printed markdown (e.g. benchmarks/capacity_table.py's table.txt), without its closing
    "wrote ..." line."""
    lines = (ROOT / path).read_text().rstrip().splitlines()
    prose = ("target ", "machines:")  # one-line verdicts: a list, so markdown keeps them apart
    return "\n".join(f"- {line}" if line.startswith(prose) else line
                     for line in lines if not line.startswith("wrote "))


def first_table(path: str, count: int = 1) -> str:
    """The first `count` markdown tables in a benchmark's printed output under results/, each with the
    one-line verdicts printed under it (as markdown_file writes them)."""
    blocks = [b for b in markdown_file(path).split("\n\n") if b.startswith("|")]
    return "\n\n".join(blocks[:count])


def choice_table(folder: str) -> str:
    """The capacity curve's answer in one table (benchmarks/capacity_table.py's choice.csv): under each kind
    of budget, from which cost each measured network is the best choice; CPU time names its CPU."""
    import csv

    from capacity_table import gain_text, network_name

    kinds = {"train_flops": ("training FLOPs counted", lambda v: f"{v / 1e12:.2f} TFLOPs"),
             "cpu_s": ("CPU time, dense kernels", lambda v: f"{v / 60:.1f} CPU-min")}
    lines = ["| budget | from | train | Class-IL % [min, max] | over the pick before, paired by seed [min, max] "
             "| seeds |", "|---|---|---|---|---|---|"]
    for r in csv.DictReader((ROOT / folder / "choice.csv").open()):
        kind, unit = kinds[r["budget"]]
        if r["budget"] == "cpu_s":  # the CPU is what the seconds are of
            kind += f" ({r['cpu'].replace('(R)', '')})"
        net = network_name({**r, "sparsity": float(r["sparsity"])})
        lines.append(f"| {kind} | {unit(float(r['from']))} | {net} | {float(r['class_il']):.2f} "
                     f"[{float(r['class_il_min']):.2f}, {float(r['class_il_max']):.2f}] | {gain_text(r)} "
                     f"| {len(r['seeds'].split())} |")
    return "\n".join(lines)


def bench_table(path: str) -> str:
    """One `fleet bench sparcl --json` report as its table (benchmarks/tables.py)."""
    return tables.bench_table(ROOT / path).strip()


def study_table(name: str, *args) -> str:
    """One of benchmarks/tables.py's tables, by function name (ddr_tables, ...) and its arguments; its
    one-line verdicts become a list."""
    out, fenced = [], False
    for line in getattr(tables, name)(*args).strip().splitlines():
        fenced ^= line.startswith("```")
        plain = fenced or line.startswith(("|", "```")) or not line.strip()
        out.append(line if plain else f"- {line}")
    return "\n".join(out)
