"""The `fleet` command line: every subcommand, its arguments and the function that runs it."""

from __future__ import annotations

from clients.batching import BATCHINGS
from clients.sparcl.ddr import RANKS as DDR_RANKS
from fleet.cli.arguments import (
    ArgumentParser,
    add_scenario_run_options,
    add_timing_options,
)
from fleet.cli.commands import (
    cmd_bench,
    cmd_bench_frontier,
    cmd_bench_kernels,
    cmd_calibrate,
    cmd_certs,
    cmd_compare,
    cmd_coordinator,
    cmd_device,
    cmd_profiles,
    cmd_run,
    cmd_schema,
    cmd_state,
    cmd_submit,
    cmd_validate,
)


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

    schema = sub.add_parser("schema", help="the scenario's JSON Schema, for editors that complete and check keys")
    schema.add_argument("--out", default=None, help="write it to this file (default: print it)")
    schema.set_defaults(func=cmd_schema)

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
                               "device), kernels (measured sparse speed-ups for the time model), frontier")
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
    bench.add_argument("--batches", default="loader", choices=BATCHINGS,
                       help="how every arm cuts an epoch into batches: as PyTorch's DataLoader and the reference "
                       "(full batches, then the remainder, however small) or balanced (as many steps, in sizes "
                       "within one example, so DDR's removals leave no tiny last batch)")
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

    front = targets.add_parser("frontier", help="Class-IL against CPU speed-up from `fleet bench sparcl --json` "
                               "reports of one configuration: OUT.csv and OUT.png")
    front.add_argument("reports", nargs="+", help="`fleet bench sparcl --json` reports")
    front.add_argument("--out", required=True, help="writes OUT.csv and OUT.png")
    front.add_argument("--target", default="2.3,2", help="speed-up,points below dense drawn as the target "
                       "(default 2.3,2: the paper's speed-up at 0.90, two points)")
    front.set_defaults(func=cmd_bench_frontier)
    return parser
