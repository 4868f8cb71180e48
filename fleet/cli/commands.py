"""What each `fleet` subcommand does: load, call the library, print. Library modules load inside each
command, so `fleet device` on a Raspberry Pi imports only what a device needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from clients.errors import InputError, excerpt
from fleet.cli import exits
from fleet.cli.arguments import (
    check_ray_address,
    check_writable,
    parse_positive_ints,
    parse_seeds,
)


def cmd_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fleet.bench import (
        BenchConfig,
        format_table,
        run_bench,
        total_epochs,
        with_authors_settings,
    )

    given = {k: getattr(args, k) for k in ("lr", "ddr_presentations", "replay_from_task")
             if getattr(args, k) is not None}  # set on the command line: kept over --authors-settings
    config = BenchConfig(
        dataset=args.dataset, data_dir=args.data_dir, method=args.method, sparsity=args.sparsity,
        seeds=parse_seeds(args.seeds), epochs=args.epochs, buffer_size=args.buffer_size,
        width=args.width, ablation=args.ablation, dgm_keep=args.dgm_keep,
        mask_other_classes=not args.no_class_mask, max_per_class=args.max_per_class,
        equal_flops=not args.no_equal_flops, granularity=args.granularity, sparse_kernels=args.sparse_kernels,
        recalibrate_norms=args.recalibrate_norms, ddr_rank=args.ddr_rank, device=args.device, batches=args.batches,
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
    return exits.OK


def cmd_bench_kernels(args: argparse.Namespace) -> int:
    """`fleet bench kernels`: measured speed-ups of sparse variants of the scenario's model (fleet.bench.kernels)."""
    import shlex

    from tqdm import tqdm

    from fleet.bench import (
        KernelsConfig,
        check_kernels_dir,
        format_kernels_table,
        parse_densities,
        run_kernels,
    )
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
    return exits.OK


def _validate_bench(config) -> None:
    """Fail fast on what BenchConfig's own rules cannot see (the learner's settings, the device, the data,
    the memory), before any training starts."""
    from clients.cl.methods import MethodConfig
    from clients.data import INPUT_SHAPES, load_stream
    from clients.sparcl import sparse_kernels
    from clients.sparcl.config import TrainConfig, torch_device
    from clients.sparcl.tdm import TDMConfig
    from fleet.config import learner_bytes, memory_limit_bytes

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


def cmd_bench_frontier(args: argparse.Namespace) -> int:
    """`fleet bench frontier`: Class-IL against CPU speed-up from `fleet bench sparcl --json` reports."""
    from fleet.bench import format_points, parse_target, read_reports, write_frontier

    target = parse_target(args.target)
    out = Path(args.out)
    check_writable(out.with_suffix(".csv"))
    rows = write_frontier(read_reports(args.reports), out, target)
    print(format_points(rows))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return exits.OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fleet.bench import VARIANTS, run_calibration
    from fleet.config import load_scenario
    from fleet.outputs import check_output_dir

    scenario = load_scenario(args.scenario, simulate=False)
    batches = parse_positive_ints(args.batches, "--batches")
    out_dir = Path(args.out or f"{scenario.output}-calibration")
    check_output_dir(out_dir, force=True)  # a folder, or one that can be created, and writable
    if (out_dir / "calibration.csv").exists() and not args.force:
        raise InputError(f"output folder '{out_dir}' already holds a calibration: pass --force to replace it")
    with tqdm(total=args.repeats * len(batches) * len(VARIANTS), unit="run", desc="calibrate",
              disable=args.quiet, file=sys.stderr) as bar:
        result = run_calibration(scenario, out_dir, batches=batches, repeats=args.repeats, chunk_s=args.seconds,
                           threads=args.threads, base=args.base, progress=lambda: bar.update(1))
    print(f"training speed on {scenario.name}'s model, kernel GFLOP/s (median [min, max] of {args.repeats}):")
    for (variant, batch), (median, low, high) in sorted(result["rates"].items()):
        print(f"  {variant:6s} batch {batch:4d}: {median:7.3f} [{low:.3f}, {high:.3f}]")
    print(f"profile {result['profile']}: {result['entry']['peak_gflops']} GFLOP/s sustained (base {args.base})")
    print(f"wrote {out_dir}/calibration.csv, profile.yaml, scenario.yaml (run it: fleet run {out_dir}/scenario.yaml)")
    return exits.OK


def cmd_validate(args: argparse.Namespace) -> int:
    from fleet.config import load_scenario

    scenario = load_scenario(args.scenario)
    print(f"{args.scenario}: ok ({scenario.fleet.devices} devices, {scenario.federation.rounds} rounds, "
          f"{scenario.learner_config(scenario.seed).label} on {scenario.dataset.name})")
    return exits.OK


def cmd_schema(args: argparse.Namespace) -> int:
    """`fleet schema`: the scenario's JSON Schema, for editors (stdout, or --out FILE)."""
    from fleet.config import schema_text
    from fleet.outputs import write_text

    if args.out is None:
        sys.stdout.write(schema_text())
        return exits.OK
    out = Path(args.out)
    check_writable(out)
    write_text(out, schema_text())
    print(f"wrote {out}")
    return exits.OK


def cmd_profiles(args: argparse.Namespace) -> int:
    """The built-in device profiles (and a scenario's own) as a table, or each figure with its source."""
    from fleet.world import (
        PROFILE_SOURCES,
        PROFILES,
        format_profile_sources,
        format_profile_table,
    )

    table, sources = PROFILES, PROFILE_SOURCES
    if args.scenario is not None:
        from fleet.config import load_scenario

        scenario = load_scenario(args.scenario, simulate=False)  # listing trains nothing: no memory bound
        table, sources = scenario.device_profile_table(), scenario.profile_sources()
    try:
        print(format_profile_sources(table, sources) if args.sources else format_profile_table(table), flush=True)
    except BrokenPipeError:  # `fleet profiles --sources | head` has read what it wants: no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return exits.OK


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
            return exits.OK
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
    return exits.FAILED if run_failed(summary) else exits.OK


def written(out_dir: Path) -> list[str]:
    """The run files in `out_dir`, in the order a reader wants them."""
    from fleet.outputs import RUN_FILES

    return [name for name in RUN_FILES if (out_dir / name).is_file()]


def resume_target(args: argparse.Namespace):
    """The scenario a stopped run in `--resume DIR` ran (its scenario.yaml), and DIR; None if it is complete."""
    import json

    from fleet.config import load_scenario
    from fleet.run import checkpoint_dir

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
    from fleet.outputs import (
        check_output_dir,
        plot_accuracy_bands,
        plot_accuracy_time,
        plot_comparison,
        plot_seed_comparison,
        write_csv,
    )
    from fleet.run import (
        PAIRED_ORDER,
        run_comparison,
        format_paired,
        format_table,
        named,
        over_seeds,
        paired_over_seeds,
        seeded,
        variant_dirs,
        variants,
    )

    scenario = load_scenario_with_sets(args)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()] if args.profiles else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    labels = named(variants(scenario, profiles, args.vary), args.labels)
    chosen = over_seeds(labels, seeds) if seeds else labels
    out_dir = Path(args.out or f"{scenario.output}-compare")
    for folder in (out_dir, *variant_dirs(out_dir, chosen)):
        check_output_dir(folder, force=args.force or args.resume)
    rows = run_comparison(scenario, out_dir, chosen,
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
    return exits.OK


def cmd_certs(args: argparse.Namespace) -> int:
    from fleet.deploy import make_certs

    written = make_certs(Path(args.out), args.host, args.nodes)
    print(f"wrote {len(written)} files to {args.out}: ca.crt (every device), server.crt/.key (the coordinator), "
          f"node-<i>.key (device i only) and node-<i>.pub (registered by `fleet coordinator`)")
    return exits.OK


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
    from fleet.config import load_scenario
    from fleet.deploy import submit

    scenario = load_scenario(args.scenario, simulate=False)  # bad input fails here, before the coordinator
    assert scenario.output is not None  # a loaded scenario has its default filled
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
            assert blob is not None  # there is a state before rounds[-1] + 1: rounds[-1]'s
            rows.append({"folder": str(state_store.device_folder(parent, device).relative_to(root)),
                         "round": rounds[-1], **state_store.describe(blob)})
    if not rows:
        raise InputError(f"no device state under '{root}' (a device writes device-<id>/round-<r>.pt)")
    for row in rows:
        print(" ".join(f"{k}={v}" for k, v in row.items()))
    return exits.OK


def load_scenario_with_sets(args: argparse.Namespace):
    """The scenario file with any `--set` overrides applied (and re-validated)."""
    from fleet.config import load_scenario
    from fleet.run import parse_set

    scenario = load_scenario(args.scenario, simulate=not getattr(args, "dry_run", False))
    return scenario.with_overrides(parse_set(args.set)) if args.set else scenario
