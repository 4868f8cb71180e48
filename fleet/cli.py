"""The `fleet` command: run, compare and validate scenarios; run real devices; benchmark SparCL and kernels.

Thin glue: parse arguments into typed configs, call the library, print.
Bad input ends with one line on stderr naming the culprit and exit status 2,
before any work starts (output folders and report paths are checked first).
Ctrl-C and SIGTERM end a run within seconds (exit 130 and 143).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from clients.errors import InputError, excerpt
from clients.sparcl.ddr import RANKS as DDR_RANKS
from fleet.deploy import DeploymentError
from fleet.run import Terminated, handle_sigterm

MAX_MESSAGE = 300  # characters of an argparse message, which quotes the bad argument whole
MAX_BENCH_EPOCHS = 100_000


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage dump), bounded, and exit 2."""

    def error(self, message: str) -> None:
        message = " ".join(message.split())
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        raise InputError(f"{self.prog}: {message}")


def parse_seeds(text: str) -> tuple[int, ...]:
    """Comma-separated seeds, each in [0, 2**32) like a scenario's seed."""
    from fleet.config import SEED_LIMIT

    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:  # also the text of an integer of more than 4,300 digits
        raise InputError(f"--seeds must be comma-separated integers, got {excerpt(text)}") from None
    if not seeds:
        raise InputError("--seeds must name at least one seed")
    if len(set(seeds)) != len(seeds):  # a paired median would count that seed twice
        raise InputError(f"--seeds names a seed twice: {excerpt(text)}")
    for seed in seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise InputError(f"--seeds: seed {excerpt(seed)} is outside [0, {SEED_LIMIT})")
    return seeds


def cmd_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fleet.bench import BenchConfig, format_table, run_bench, total_epochs, with_authors_settings

    given = {k: getattr(args, k) for k in ("lr", "ddr_presentations", "replay_from_task")
             if getattr(args, k) is not None}  # set on the command line: kept over --authors-settings
    config = BenchConfig(
        dataset=args.dataset, data_dir=args.data_dir, method=args.method, sparsity=args.sparsity,
        seeds=parse_seeds(args.seeds), epochs=args.epochs, buffer_size=args.buffer_size,
        width=args.width, ablation=args.ablation, dgm_keep=args.dgm_keep,
        mask_other_classes=not args.no_class_mask, max_per_class=args.max_per_class,
        equal_flops=not args.no_equal_flops, granularity=args.granularity, sparse_kernels=args.sparse_kernels,
        recalibrate_norms=args.recalibrate_norms, ddr_rank=args.ddr_rank, device=args.device,
        narrow_width=args.narrow_width, controls=not args.no_controls, narrow_match=args.narrow_match,
        **given,
    )
    if args.authors_settings:
        config = with_authors_settings(config, keep=given)
    _validate_bench(config)
    if args.json:
        check_writable(Path(args.json))
    with tqdm(total=total_epochs(config), unit="epoch", desc="bench", disable=args.quiet,
              file=sys.stderr) as bar:
        report = run_bench(config, on_epoch=lambda: bar.update(1))
    print(format_table(report))
    if args.json:
        from fleet.outputs import write_json

        write_json(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0


def cmd_bench_kernels(args: argparse.Namespace) -> int:
    """`fleet bench kernels`: measured speed-ups of sparse variants of the scenario's model (fleet.bench.kernels)."""
    import shlex

    from tqdm import tqdm

    from fleet.bench import KernelsConfig, check_kernels_dir, format_kernels_table, parse_densities, run_kernels
    from fleet.config import load_scenario

    scenario = load_scenario(args.scenario, simulate=False)
    config = KernelsConfig(densities=parse_densities(args.densities),
                           batch=scenario.train.batch_size if args.batch is None else args.batch,
                           repeats=args.repeats, seconds=args.seconds, threads=args.threads)
    out_dir = Path(args.out or f"{scenario.output}-kernels")
    check_kernels_dir(out_dir, force=args.force)
    command = shlex.join(["fleet", "bench", "kernels", args.scenario,
                          "--densities", ",".join(f"{d:g}" for d in config.densities), "--batch", str(config.batch),
                          "--repeats", str(config.repeats), "--seconds", f"{config.seconds:g}",
                          "--threads", str(config.threads)])
    with tqdm(unit="run", desc="kernels", disable=args.quiet, file=sys.stderr) as bar:
        def on_start(total: int) -> None:
            bar.reset(total=total)

        report = run_kernels(scenario, config, out_dir, command=command, progress=lambda: bar.update(1),
                             on_start=on_start)
    print(format_kernels_table(report))
    print(f"wrote {out_dir}/kernels.csv, kernels.json, speedup.yaml")
    return 0


def check_writable(path: Path) -> None:
    """Fail before hours of work if a report could not be written at the end."""
    import tempfile

    folder = path.parent
    if path.is_dir():
        raise InputError(f"--json '{path}' is a folder, not a file path")
    if not folder.is_dir():
        raise InputError(f"--json '{path}': folder '{folder}' does not exist")
    try:  # the report is written to a temporary file in this folder and renamed; try that much now
        os.rmdir(tempfile.mkdtemp(prefix=".fleet-probe-", dir=folder))
    except OSError as err:
        raise InputError(f"--json '{path}': folder '{folder}' is not writable ({err.strerror or err})") from None


def _validate_bench(config) -> None:
    """Fail fast on bad settings, before any training starts."""
    import math

    from clients.cl.methods import MethodConfig
    from clients.data import load_stream
    from clients.sparcl.learner import TrainConfig, torch_device
    from clients.sparcl import sparse_kernels
    from clients.sparcl.tdm import TDMConfig
    from clients.data import INPUT_SHAPES
    from fleet.config import learner_bytes, memory_limit_bytes
    from fleet.config import MAX_WIDTH

    for flag, value in (("--sparsity", config.sparsity), ("--lr", config.lr), ("--dgm-keep", config.dgm_keep)):
        if not math.isfinite(value):
            raise InputError(f"{flag} must be a finite number, got {value}")
    if config.width is not None and not 1 <= config.width <= MAX_WIDTH:
        raise InputError(f"--width must be in [1, {MAX_WIDTH}], got {excerpt(config.width)}")
    if config.epochs > MAX_BENCH_EPOCHS:
        raise InputError(f"--epochs must be at most {MAX_BENCH_EPOCHS:,}, got {excerpt(config.epochs)}")
    if config.ddr_presentations < 1:
        raise InputError(f"--ddr-presentations must be at least 1, got {excerpt(config.ddr_presentations)}")
    MethodConfig(name=config.method, buffer_size=config.buffer_size)
    TDMConfig(sparsity=config.sparsity, granularity=config.granularity, sparse_kernels=config.sparse_kernels)
    device = torch_device(config.device, what="--device")  # a GPU asked for must be here
    if config.sparse_kernels and device.type != "cpu":  # refused here, not after hours of the other arms
        raise InputError(f"--sparse-kernels runs on the CPU only, not with --device {excerpt(config.device)}")
    if config.sparse_kernels:
        sparse_kernels.require()
    TrainConfig(epochs_per_task=config.epochs, lr=config.lr, device=config.device)
    if config.dataset in INPUT_SHAPES:  # an unknown name is reported by load_stream below
        model, buffer = learner_bytes(config.dataset, "auto", config.width, config.buffer_size, config.method)
        need, limit = 4 * model + buffer, memory_limit_bytes()  # one learner at a time: 4 model copies, a buffer
        if need > limit:
            culprit = f"--buffer-size {config.buffer_size}" if buffer > model else f"--width {config.width}"
            raise InputError(f"{culprit}: a learner would need about {need / 1e9:,.1f} GB, more than the "
                             f"{limit / 1e9:,.1f} GB (half of this machine's memory) a run may use")
    load_stream(config.dataset, data_dir=config.data_dir, seed=config.seeds[0],
                max_per_class=config.max_per_class)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fleet.bench import VARIANTS, calibrate
    from fleet.outputs import check_output_dir
    from fleet.config import load_scenario

    scenario = load_scenario(args.scenario, simulate=False)
    batches = parse_positive_ints(args.batches, "--batches")
    out_dir = Path(args.out or f"{scenario.output}-calibration")
    check_output_dir(out_dir, force=True)  # a folder, or one that can be created, and writable
    if (out_dir / "calibration.csv").exists() and not args.force:
        raise InputError(f"output folder '{out_dir}' already holds a calibration: pass --force to replace it")
    with tqdm(total=args.repeats * len(batches) * len(VARIANTS), unit="run", desc="calibrate",
              disable=args.quiet, file=sys.stderr) as bar:
        result = calibrate(scenario, out_dir, batches=batches, repeats=args.repeats, chunk_s=args.seconds,
                           threads=args.threads, base=args.base, progress=lambda: bar.update(1))
    print(f"training speed on {scenario.name}'s model, kernel GFLOP/s (median [min, max] of {args.repeats}):")
    for (variant, batch), (median, low, high) in sorted(result["rates"].items()):
        print(f"  {variant:6s} batch {batch:4d}: {median:7.3f} [{low:.3f}, {high:.3f}]")
    print(f"profile {result['profile']}: {result['entry']['peak_gflops']} GFLOP/s sustained (base {args.base})")
    print(f"wrote {out_dir}/calibration.csv, profile.yaml, scenario.yaml (run it: fleet run {out_dir}/scenario.yaml)")
    return 0


def parse_positive_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{flag} must be comma-separated integers, got {excerpt(text)}") from None
    if not values or min(values) < 1 or max(values) > 65536:
        raise InputError(f"{flag} must name integers in [1, 65536], got {excerpt(text)}")
    return values


def cmd_validate(args: argparse.Namespace) -> int:
    from fleet.config import load_scenario

    scenario = load_scenario(args.scenario)
    print(f"{args.scenario}: ok ({scenario.fleet.devices} devices, {scenario.federation.rounds} rounds, "
          f"{scenario.learner_config(scenario.seed).label} on {scenario.dataset.name})")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    """The built-in device profiles (and a scenario's own) as a table, or each figure with its source."""
    from fleet.world import PROFILE_SOURCES, PROFILES, format_profile_sources, format_profile_table

    table, sources = PROFILES, PROFILE_SOURCES
    if args.scenario is not None:
        from fleet.config import load_scenario

        scenario = load_scenario(args.scenario, simulate=False)  # listing trains nothing: no memory bound
        table, sources = scenario.device_profile_table(), scenario.profile_sources()
    try:
        print(format_profile_sources(table, sources) if args.sources else format_profile_table(table), flush=True)
    except BrokenPipeError:  # `fleet profiles --sources | head` has read what it wants: no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def run_with_progress(scenario, out_dir: Path, *, verbose: bool, quiet: bool, desc: str,
                      force: bool = False, resume: bool = False, dry: bool = False,
                      ray_address: str | None = None) -> dict:
    """One scenario with a progress bar over rounds showing accuracy, bytes and simulated time."""
    from tqdm import tqdm

    from fleet.run import run_scenario

    with tqdm(total=scenario.federation.rounds, unit="round", desc=desc, disable=quiet, file=sys.stderr) as bar:
        def on_round(row: dict) -> None:
            acc = row.get("class_il_accuracy")
            bar.set_postfix(acc="-" if acc is None else f"{acc:.1f}", up=f"{row['upload_bytes'] / 1e6:.2f}MB",
                            sim=f"{row['sim_time_s']:.0f}s", refresh=False)
            bar.update(row["round"] - bar.n)  # a resumed run starts after its finished rounds

        if dry:
            from fleet.run import dry_run

            return dry_run(scenario, out_dir, on_round=on_round, force=force)
        return run_scenario(scenario, out_dir, on_round=on_round, verbose=verbose, force=force, resume=resume,
                            ray_address=ray_address)


def check_ray_address(text: str) -> str:
    """HOST:PORT of a Ray cluster's head that answers, checked before any work (a bad one is one line)."""
    import socket

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray-address must be HOST:PORT of a Ray head node, got {excerpt(text)}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise InputError(f"--ray-address {excerpt(text)}: no Ray head answers there ({err.strerror or err})") from None
    return text


def cmd_run(args: argparse.Namespace) -> int:
    from fleet.outputs import check_output_dir

    if args.ray_address is not None:
        check_ray_address(args.ray_address)

    if args.resume and args.dry_run:
        raise InputError("fleet run: --dry-run runs no training and keeps no checkpoint: drop --resume")
    if args.resume:
        scenario, out_dir = resume_target(args)
        if scenario is None:
            print(f"{out_dir} holds a complete run: nothing to resume")
            return 0
    else:
        if args.scenario is None:
            raise InputError("fleet run: give a scenario file, or --resume DIR")
        scenario = load_scenario_with_sets(args)
        out_dir = Path(args.out or scenario.output)
        check_output_dir(out_dir, force=args.force)
    summary = run_with_progress(scenario, out_dir, verbose=args.verbose, quiet=args.quiet, desc=scenario.name,
                                force=args.force, resume=bool(args.resume), dry=args.dry_run,
                                ray_address=args.ray_address)
    st = summary["statuses"]
    learned = (f"dry run (no training, no accuracy; {summary.get('estimate')})" if summary.get("dry_run") else
               f"final Class-IL accuracy {summary['final_accuracy']:.2f}% (mean of the last {summary['last_k']} rounds "
               f"{summary['last_k_accuracy']:.2f}), Task-IL {summary['final_accuracy_task_il']:.2f}%, forgetting "
               f"{summary['forgetting']:.2f} (authors' {summary['forgetting_authors']:.2f})")
    rounds = "versions" if summary.get("mode") == "async" else "rounds"
    print(f"{scenario.name}: {summary['method']}, {learned}, {summary['rounds_completed']} {rounds}, "
          f"upload {summary['upload_bytes'] / 1e6:.2f} MB, simulated {summary['sim_time_s']:.0f} s, "
          f"{summary['energy_j']:.0f} J ({summary['wasted_energy_j']:.0f} J wasted)")
    if summary.get("arrivals"):
        a, stale = summary["arrivals"], summary["arrivals"]["staleness_versions"]
        spread = ("" if stale["median"] is None
                  else f"; staleness median {stale['median']:g} versions, max {stale['max']}")
        print(f"arrivals: {a['count']}, {a['applied']} applied, {a['too_stale']} too stale{spread}")
    print(f"device-rounds: {st['ok']} ok, {st['late']} late, {st['failed']} failed, {st['oom']} out of memory, "
          f"{st['declined']} declined, {st['adapted']} adapted; {st['offline']} offline; "
          f"rejected {summary['rejected_updates']}, app errors {summary['failed_replies']}, "
          f"timed out {summary.get('timed_out_replies', 0)}")
    print(f"wrote {out_dir}/{', '.join(written(out_dir))}")
    return 1 if run_failed(summary) else 0


def written(out_dir: Path) -> list[str]:
    """The run files in `out_dir`, in the order a reader wants them."""
    from fleet.outputs import RUN_FILES

    return [name for name in RUN_FILES if (out_dir / name).is_file()]


def resume_target(args: argparse.Namespace):
    """The scenario a stopped run in `--resume DIR` ran (its scenario.yaml), and DIR; None if it is complete."""
    import json

    from fleet.run import checkpoint_dir
    from fleet.config import load_scenario

    out_dir = Path(args.resume)
    given = [flag for flag, value in (("a scenario file", args.scenario), ("--set", args.set), ("--out", args.out),
                                      ("--force", args.force)) if value]
    if given:
        raise InputError(f"fleet run --resume takes the scenario and folder from '{out_dir}': drop {given[0]}")
    if not (out_dir / "scenario.yaml").is_file():
        raise InputError(f"'{out_dir}' holds no run to resume (no scenario.yaml)")
    summary = out_dir / "summary.json"
    if summary.is_file() and summary.stat().st_size < 1 << 26 and not checkpoint_dir(out_dir).exists():
        try:
            if json.loads(summary.read_text()).get("status") == "complete":
                return None, out_dir
        except (OSError, ValueError, AttributeError):
            pass  # an unreadable summary belongs to a run that did not finish writing it: resume
    return load_scenario(str(out_dir / "scenario.yaml")), out_dir


def run_failed(summary: dict) -> bool:
    """A run that aggregated nothing, or lost every update in most rounds, is not a result: say why."""
    rounds, empty = summary["rounds_completed"], summary.get("rounds_without_update", 0)
    if rounds and empty * 2 <= rounds:
        return False
    if rounds and summary.get("rounds_nobody_online", 0) == rounds:
        print(f"fleet: error: no device was online in any of the {rounds} rounds (their availability; the "
              f"clock waited until {summary['sim_time_s']:.0f} simulated s): nothing trained", file=sys.stderr)
        return True
    st = summary["statuses"]
    print(f"fleet: error: {empty} of {rounds} rounds aggregated no update ({summary['rejected_updates']} rejected, "
          f"{summary['failed_replies']} app errors, {summary.get('timed_out_replies', 0)} timed out, "
          f"{st['late']} late, {st['failed']} failed, {st['oom']} out of memory, {st['declined']} declined): "
          "the model did not learn from this fleet", file=sys.stderr)
    return True


def cmd_compare(args: argparse.Namespace) -> int:
    from fleet.run import (PAIRED_ORDER, compare, format_paired, format_table, named, over_seeds, paired_over_seeds,
                           seeded, variant_dirs, variants)
    from fleet.outputs import check_output_dir, write_csv
    from fleet.outputs import plot_accuracy_bands, plot_accuracy_time, plot_comparison, plot_seed_comparison

    scenario = load_scenario_with_sets(args)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()] if args.profiles else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    labels = named(variants(scenario, profiles, args.vary), args.labels)
    chosen = over_seeds(labels, seeds) if seeds else labels
    out_dir = Path(args.out or f"{scenario.output}-compare")
    for folder in (out_dir, *variant_dirs(out_dir, chosen)):
        check_output_dir(folder, force=args.force or args.resume)
    rows = compare(scenario, out_dir, chosen,
                   lambda sc, out, label: run_with_progress(sc, out, verbose=args.verbose, quiet=args.quiet,
                                                            desc=label, force=args.force or args.resume),
                   force=args.force or args.resume, resume=args.resume)
    print(format_table(rows))
    written = "comparison.csv, comparison.png, accuracy_time.png, tradeoff.png"
    if seeds:
        summary = paired_over_seeds(rows, list(labels), seeds)
        print(format_paired(summary))
        write_csv(out_dir / "paired.csv", summary, sorted({k for r in summary for k in r}, key=PAIRED_ORDER.index))
        written += ", paired.csv"
        plot_seed_comparison(summary, out_dir / "comparison.png", f"{scenario.name}: medians over {len(seeds)} seeds")
        plot_accuracy_bands({label: [r["curve"] for r in rows if r["profile"] in
                                     {seeded(label, s) for s in seeds}] for label in labels},
                            out_dir / "accuracy_time.png", f"{scenario.name}: median over {len(seeds)} seeds, "
                            "band from the lowest to the highest seed")
    else:
        plot_comparison(rows, out_dir / "comparison.png", f"{scenario.name}: variants compared")
        plot_accuracy_time({r["profile"]: r["curve"] for r in rows}, out_dir / "accuracy_time.png",
                           f"{scenario.name}: accuracy against simulated time")
    print(f"wrote {out_dir}/{written} and one folder per variant")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from fleet.deploy import make_certs

    written = make_certs(Path(args.out), args.host, args.nodes)
    print(f"wrote {len(written)} files to {args.out}: ca.crt (every device), server.crt/.key (the coordinator), "
          f"node-<i>.key (device i only) and node-<i>.pub (registered by `fleet coordinator`)")
    return 0


def cmd_coordinator(args: argparse.Namespace) -> int:
    from fleet.deploy import Coordinator, run_coordinator

    if args.insecure:
        print("fleet: warning: --insecure: no TLS and no device authentication; anyone who reaches "
              f"{args.host}:{args.port} can join the fleet and read the model", file=sys.stderr)
    return run_coordinator(Coordinator(host=args.host, port=args.port, insecure=args.insecure, home=Path(args.home),
                                       certs=Path(args.certs).expanduser().resolve() if args.certs else None))


def cmd_device(args: argparse.Namespace) -> int:
    from fleet.deploy import Device, run_device

    if args.insecure:
        print("fleet: warning: --insecure: this device sends its updates unencrypted and joins unauthenticated",
              file=sys.stderr)

    def path(value):
        return Path(value).expanduser().resolve() if value else None

    return run_device(Device(superlink=args.superlink, device_id=args.device_id, devices=args.devices,
                             state_dir=path(args.state_dir), ca=path(args.ca), key=path(args.key),
                             data_dir=path(args.data_dir), profile=args.profile, real=not args.stand_in,
                             port=args.port, home=path(args.home), insecure=args.insecure, threads=args.threads,
                             scenario=path(args.scenario), rejoin_wait_s=args.rejoin_wait))


def cmd_submit(args: argparse.Namespace) -> int:
    from fleet.deploy import submit
    from fleet.config import load_scenario

    scenario = load_scenario(args.scenario, simulate=False)  # bad input fails here, before the coordinator
    out = Path(args.out or scenario.output)
    return submit(Path(args.scenario), out, args.connection, resume=args.resume, force=args.force)


def cmd_state(args: argparse.Namespace) -> int:
    from clients import state_store

    root = Path(args.state_dir)
    rows = []
    for parent, device in state_store.device_folders(root):
        rounds = state_store.state_rounds(parent, device)
        if rounds:
            blob = state_store.load_state(parent, device, rounds[-1] + 1)
            rows.append({"folder": str(state_store.device_folder(parent, device).relative_to(root)),
                         "round": rounds[-1], **state_store.describe(blob)})
    if not rows:
        raise InputError(f"no device state under '{root}' (a device writes device-<id>/round-<r>.pt)")
    for row in rows:
        print(" ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def load_scenario_with_sets(args: argparse.Namespace):
    """The scenario file with any `--set` overrides applied (and re-validated)."""
    from fleet.run import parse_set
    from fleet.config import load_scenario

    scenario = load_scenario(args.scenario, simulate=not getattr(args, "dry_run", False))
    return scenario.with_overrides(parse_set(args.set)) if args.set else scenario


def add_scenario_run_options(parser: argparse.ArgumentParser, default_out: str, resumable: bool = False) -> None:
    """The options `run` and `compare` share."""
    parser.add_argument("scenario", nargs="?" if resumable else None, help="scenario YAML")
    parser.add_argument("--out", default=None, help=f"output folder (default: {default_out})")
    parser.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true",
                        help="replace the run an output folder already holds (refused without it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one scenario value, e.g. --set timing.budget=tight (repeatable)")


def add_timing_options(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The options of the commands that time training on this machine (calibrate, bench kernels)."""
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats of every measurement")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a simulated device gets one CPU)")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="fleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    run = sub.add_parser("run", help="run a scenario on Flower's simulation engine")
    add_scenario_run_options(run, "the scenario's `output`", resumable=True)
    run.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                     help="train the devices on this existing Ray cluster (one CPU each) instead of a local Ray")
    run.add_argument("--dry-run", action="store_true",
                     help="run the world without training: work from the model's accounting, in seconds")
    run.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the stopped run in DIR after its last finished round (no scenario argument)")
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compare", help="one scenario under several budget profiles (or other variants)")
    add_scenario_run_options(comp, "<scenario output>-compare")
    comp.add_argument("--profiles", default=None, help="budget profiles, comma-separated "
                      "(default: generous,tight,starved)")
    comp.add_argument("--vary", default=None, help="instead of profiles, vary one value: "
                      "section.key=v1,v2 (e.g. federation.aggregation=mask-aware,fedavg)")
    comp.add_argument("--labels", default=None, help="names for the variants, comma-separated, in order (e.g. "
                      "sync,over,async for three --vary values)")
    comp.add_argument("--seeds", default=None, help="run every variant once per seed, e.g. 0,1,2,3,4, and add "
                      "medians, 95%% intervals and differences from the first variant paired by seed")
    comp.add_argument("--resume", action="store_true", help="keep every variant whose folder holds a complete run "
                      "of the same scenario; run only the others (an interrupted comparison, or new tables)")
    comp.set_defaults(func=cmd_compare)

    cal = sub.add_parser("calibrate", help="measure this machine's training speed on a scenario's model; "
                         "write a device profile of it")
    cal.add_argument("scenario", help="scenario YAML (its model, data and batch size)")
    cal.add_argument("--out", default=None, help="output folder (default: <scenario output>-calibration)")
    cal.add_argument("--batches", default="8,32,128", help="batch sizes to time (the scenario's must be one)")
    add_timing_options(cal, repeats=3)
    cal.add_argument("--base", default="rpi4", help="profile whose other figures (memory, links, power) it keeps")
    cal.add_argument("--force", action="store_true", help="replace a calibration the folder already holds")
    cal.add_argument("--quiet", action="store_true", help="no progress bar")
    cal.set_defaults(func=cmd_calibrate)

    validate = sub.add_parser("validate", help="check a scenario without running it")
    validate.add_argument("scenario", help="scenario YAML")
    validate.set_defaults(func=cmd_validate)

    profiles = sub.add_parser("profiles", help="the device profiles' figures (--sources: where each comes from)")
    profiles.add_argument("scenario", nargs="?", default=None, help="scenario YAML: list its own `profiles:` too")
    profiles.add_argument("--sources", action="store_true", help="print each figure with its source")
    profiles.set_defaults(func=cmd_profiles)

    certs = sub.add_parser("certs", help="development TLS certificates and device keys for a secured fleet")
    certs.add_argument("out", help="folder to write them to (must not hold them already)")
    certs.add_argument("--host", action="append", default=[], metavar="ADDRESS",
                       help="the coordinator's address as devices dial it (repeatable; loopback is always in)")
    certs.add_argument("--nodes", type=int, default=2, help="device key pairs to make (node-0 ... node-<n-1>)")
    certs.set_defaults(func=cmd_certs)

    coord = sub.add_parser("coordinator", help="run the SuperLink (TLS, registered devices only) for real devices")
    coord.add_argument("--certs", default=None, help="folder from `fleet certs` (its node-*.pub are registered)")
    coord.add_argument("--host", default="127.0.0.1", help="address to listen on (devices on a LAN: its LAN address)")
    coord.add_argument("--port", type=int, default=9092, help="the one port devices and `fleet submit` use")
    coord.add_argument("--home", default="coordinator", help="the SuperLink's folder (database, installed apps)")
    coord.add_argument("--insecure", action="store_true", help="no TLS, no authentication: loopback trials only")
    coord.set_defaults(func=cmd_coordinator)

    device = sub.add_parser("device", help="run this machine as one device of the fleet (a Flower SuperNode)")
    device.add_argument("--superlink", required=True, metavar="HOST:PORT", help="the coordinator")
    device.add_argument("--device-id", type=int, required=True, help="this device's id in the scenario")
    device.add_argument("--devices", type=int, required=True, help="the fleet's size (the scenario's fleet.devices)")
    device.add_argument("--state-dir", required=True, help="where its learning state survives restarts")
    device.add_argument("--ca", default=None, help="the coordinator's ca.crt")
    device.add_argument("--key", default=None, help="this device's node-<id>.key")
    device.add_argument("--data-dir", default=None, help="its copy of the data set (default: the scenario's)")
    device.add_argument("--profile", default=None, help="what hardware this is (reported with its figures)")
    device.add_argument("--stand-in", action="store_true",
                        help="a stand-in on the coordinator: its figures are not a real device's")
    device.add_argument("--port", type=int, default=9094, help="its local API port (127.0.0.1)")
    device.add_argument("--home", default=None, help="its Flower folder (default: <state-dir>/flwr)")
    device.add_argument("--threads", type=int, default=None,
                        help="torch threads its rounds train on, checked before it connects (default: the "
                             "scenario's train.threads)")
    device.add_argument("--scenario", default=None,
                        help="the scenario the coordinator will run: the torch check trains its network at batch 1 "
                             "and at its batch (default: scenarios/pi_pair.yaml)")
    device.add_argument("--insecure", action="store_true", help="no TLS, no authentication: loopback trials only")
    device.add_argument("--rejoin-wait", type=float, default=120.0, metavar="SECONDS",
                        help="keep trying this long when the coordinator refuses it (after a restart it holds "
                             "the old connection for about a minute)")
    device.set_defaults(func=cmd_device)

    sub_run = sub.add_parser("submit", help="run a scenario on the coordinator's devices (flwr run, checked)")
    sub_run.add_argument("scenario", help="scenario YAML")
    sub_run.add_argument("--out", default=None, help="output folder on the coordinator (default: the scenario's)")
    sub_run.add_argument("--connection", default="sparcl-fleet", help="the Flower connection to submit to")
    sub_run.add_argument("--resume", action="store_true", help="continue the stopped run in the output folder")
    sub_run.add_argument("--force", action="store_true", help="replace the run the output folder holds")
    sub_run.set_defaults(func=cmd_submit)

    state = sub.add_parser("state", help="what a device's state folder holds: task, buffer, masks, work done")
    state.add_argument("state_dir", help="a device's --state-dir (or a run's checkpoint/devices folder)")
    state.set_defaults(func=cmd_state)

    bench_sub = sub.add_parser("bench", help="benchmarks: sparcl (dense method vs its SparCL version on one "
                               "device), kernels (measured sparse speed-ups for the time model)")
    targets = bench_sub.add_subparsers(dest="target", required=True, metavar="TARGET", parser_class=ArgumentParser)
    bench = targets.add_parser("sparcl", help="dense method vs its SparCL version on one device")
    bench.add_argument("--dataset", default="digits",
                       help="digits (embedded), synthetic, mnist, fashion-mnist, cifar10")
    bench.add_argument("--data-dir", default=None,
                       help="folder holding (Fashion-)MNIST IDX or CIFAR-10 pickle files "
                            "(fashion-mnist: /usr/share/datasets/fashion-mnist by default)")
    bench.add_argument("--method", default="derpp", help="finetune, er, der, derpp")
    bench.add_argument("--sparsity", type=float, default=0.9, help="TDM target sparsity in [0, 1)")
    bench.add_argument("--seeds", default="0,1,2,3,4",
                       help="comma-separated seeds (paired medians and their spread are reported)")
    bench.add_argument("--epochs", type=int, default=50, help="epochs per task")
    bench.add_argument("--lr", type=float, default=None,
                       help="SGD learning rate, no momentum (default 0.1; 0.03 under --authors-settings)")
    bench.add_argument("--buffer-size", type=int, default=200)
    bench.add_argument("--width", type=int, default=None, help="backbone width (default per backbone)")
    bench.add_argument("--ablation", default="full",
                       help="full, tdm, tdm+ddr, tdm+dgm, all (each of these in turn), static (the control: "
                       "the initial magnitude-pruned mask kept for the whole stream), or a comma-separated list "
                       "(e.g. tdm,full)")
    bench.add_argument("--granularity", default="weight",
                       help="TDM masks: weight (single weights, the reference) or channel (whole output channels)")
    bench.add_argument("--sparse-kernels", action="store_true",
                       help="also run the full SparCL variant with its weight masks on SparseProp's sparse "
                       "kernels where faster (optional extra), side by side")
    bench.add_argument("--recalibrate-norms", action="store_true",
                       help="every arm recomputes its BatchNorm statistics at each task's end (one forward pass "
                       "over the task and the buffer, counted) instead of keeping the lagging running average")
    bench.add_argument("--ddr-rank", default="forgetting", choices=DDR_RANKS,
                       help="which examples DDR removes: the least forgotten (SparCL), or random ones (the control)")
    bench.add_argument("--ddr-presentations", type=int, default=None, metavar="K",
                       help="epochs of forgetting statistics each DDR removal waits for; removals that no longer "
                       "fit in a task are skipped (default 1: the reference's points as they fall; 5 under "
                       "--authors-settings)")
    bench.add_argument("--replay-from-task", type=int, default=None, metavar="T",
                       help="the first task (0-based) whose steps add buffer terms; the buffer fills from the "
                       "start (default 0, as mammoth; 1 under --authors-settings, as SparCL's code)")
    bench.add_argument("--authors-settings", action="store_true",
                       help="SparCL's authors' settings: constant lr 0.03, replay from the second task, DDR's "
                       "five-presentation schedule where epochs allow (flags given explicitly still apply)")
    bench.add_argument("--dgm-keep", type=float, default=0.2, help="share of gradient entries DGM keeps")
    bench.add_argument("--device", default="cpu",
                       help="where to train: cpu, cuda, cuda:N, or auto (a GPU where there is one); on a GPU "
                       "compare the wall-clock ratio the table prints, not CPU time")
    bench.add_argument("--no-class-mask", action="store_true",
                       help="do not mask other tasks' logits in the current-task loss")
    bench.add_argument("--max-per-class", type=int, default=None, help="cap training examples per class")
    bench.add_argument("--no-equal-flops", action="store_true",
                       help="skip the dense baseline trained for SparCL's FLOPs (fewer epochs)")
    bench.add_argument("--narrow-width", type=int, default=None,
                       help="run the dense method at this smaller width (default: the width whose training FLOPs "
                       "are nearest SparCL's, see --narrow-match): the baseline masks must beat")
    bench.add_argument("--narrow-match", default="per-example", choices=("per-example", "total"),
                       help="the automatic narrow width matches SparCL's training FLOPs per example (default) or "
                       "in total (DDR's removed examples counted as saved)")
    bench.add_argument("--no-controls", action="store_true",
                       help="skip the standing controls (the static mask at the same sparsity and the dense "
                       "network of equal FLOPs) for a quick run; dense at the same width always runs")
    bench.add_argument("--json", default=None, help="write the report here")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(func=cmd_bench)

    kernels = targets.add_parser("kernels", help="time dense, weight-masked and channel-compacted training of a "
                                 "scenario's model; write a speed-up table for timing.kernels: sparse")
    kernels.add_argument("scenario", help="scenario YAML (its model, data set and batch size)")
    kernels.add_argument("--densities", default="1.0,0.5,0.25,0.1,0.05",
                         help="comma-separated densities in (0, 1] (the share of weights or channels kept)")
    kernels.add_argument("--batch", type=int, default=None, help="batch size (default: the scenario's)")
    add_timing_options(kernels, repeats=5)
    kernels.add_argument("--out", default=None, help="output folder (default: <scenario output>-kernels)")
    kernels.add_argument("--force", action="store_true", help="replace a kernels benchmark the folder already holds")
    kernels.add_argument("--quiet", action="store_true", help="no progress bar")
    kernels.set_defaults(func=cmd_bench_kernels)
    return parser


def nodes_unavailable() -> type:
    """server.strategy's NodesUnavailable, imported only when an error needs it: `fleet device` stays
    beside its SuperNode for the whole run, and on a Pi every module it imports costs memory."""
    from server.strategy import NodesUnavailable

    return NodesUnavailable


def main(argv: list[str] | None = None) -> int:
    restore = handle_sigterm()
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except InputError as err:
        print(f"fleet: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except (nodes_unavailable(), DeploymentError) as err:
        print(f"fleet: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print("fleet: terminated" if terminated else "fleet: interrupted", file=sys.stderr)
        return leave(143 if terminated else 130)
    finally:
        restore()


def one_line(text: str, limit: int = 500) -> str:
    """A message as one line of at most `limit` characters: a safety net behind the bounded excerpts."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def leave(code: int) -> int:
    """Exit now if a thread would keep the process alive (Flower's server thread waits out its round
    timeout after an interrupt); everything a run writes is on disk by then. Else return `code`."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
