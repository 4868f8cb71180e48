"""The docs: generated pages are fresh, the site builds with no warning, and every `fleet` command the
docs and the README show is one the real parser accepts."""

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from clients.errors import InputError
from fleet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
SHOWN = [ROOT / "README.md", ROOT / "scenarios" / "README.md", *PAGES]
GENERATED = [ROOT / "README.md", *PAGES]  # the pages with cog blocks, and any that may gain one
SHELL_ENDS = {"&&", "||", "|", ";", ">", ">>", "2>&1", "&"}


def test_every_generated_page_is_fresh():
    """cog rewrites the blocks generated from the code and results/ (docs/generate.py); --check fails
    when a page differs from what its block would write now."""
    result = subprocess.run([sys.executable, "-m", "cogapp", "--check", "-I", "docs", *map(str, GENERATED)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, (
        f"stale docs: run `.venv/bin/cog -r -I docs README.md docs/**/*.md`\n{result.stdout}{result.stderr}")


def test_the_site_builds_with_no_warning(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "reference" / "cli" / "index.html").is_file()


def shown_commands() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(where, command) for every `fleet ...` command the docs show: whole commands in shell blocks,
    and mentions in running text (`fleet compare --seeds`), which name a subcommand and options."""
    whole, mentioned = [], []
    for path in SHOWN:
        where = f"{path.relative_to(ROOT)}"
        text = path.read_text()
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                for start in re.finditer(r"(?:^|&& |; )((?:\.venv/bin/)?fleet \S.*)", line):
                    whole.append((where, start.group(1)))
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        mentioned += [(where, span) for span in re.findall(r"`((?:\.venv/bin/)?fleet [a-z][^`]*)`", prose)]
    return whole, mentioned


WHOLE, MENTIONED = shown_commands()


def test_the_docs_show_commands():
    assert len(WHOLE) >= 10 and len(MENTIONED) > 40


def words_of(where: str, command: str) -> list[str]:
    try:
        words = shlex.split(command, comments=True)
    except ValueError as err:
        pytest.fail(f"{where}: `{command}` is not a shell command: {err}")
    cut = next((i for i, w in enumerate(words) if w in SHELL_ENDS), len(words))
    return words[1:cut]


@pytest.mark.parametrize("where, command", WHOLE)
def test_every_whole_command_the_docs_show_parses(where, command):
    args = words_of(where, command)
    if "--help" in args or "-h" in args:
        return
    try:
        build_parser().parse_args(args)
    except (InputError, SystemExit) as err:
        pytest.fail(f"{where}: `{command}` does not parse: {err}")


def subcommand(args: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the (nested) subcommand that `args` start with, and the words after its name."""
    parser = build_parser()
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or not args or args[0] not in subs[0].choices:
            return parser, args
        parser, args = subs[0].choices[args[0]], args[1:]


@pytest.mark.parametrize("where, command", MENTIONED)
def test_every_command_the_docs_mention_names_a_real_subcommand_and_options(where, command):
    parser, rest = subcommand(words_of(where, command))
    assert parser.prog != "fleet", f"{where}: `{command}` names no fleet subcommand"
    options = {o for a in parser._actions for o in a.option_strings}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{where}: `{command}`: {parser.prog} has no {word.split('=')[0]}"


def test_the_readme_is_short_and_its_links_lead_somewhere():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for target in re.findall(r"\]\(([^)#]+)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
