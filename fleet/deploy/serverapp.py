"""The ServerApp that `flwr run` submits to a SuperLink: a scenario on the deployment engine.

The same run as `fleet run` (the strategy, the simpy world, centralised evaluation,
rounds.csv, checkpoints and summary.json), but its devices are SuperNodes that
connect to the SuperLink: Raspberry Pis, or stand-ins on the coordinator. The
scenario file still chooses the fleet settings; the run config names it:

    scenario  path of the scenario YAML (relative: to the SuperLink's working folder,
              else to this app's folder, where the FAB carries scenarios/)
    out       output folder ("" : the scenario's `output`), relative to the SuperLink's
              working folder
    resume    true: continue the stopped run in `out`
    force     true: replace a run `out` already holds

`fleet submit` fills them in with absolute paths and checks how the run ended.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from clients.records import config_flag

APP_DIR = Path(__file__).resolve().parents[2]
log = logging.getLogger("flwr")


def resolve_scenario(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return APP_DIR / path


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from fleet.run import run_scenario
    from fleet.config import load_scenario

    config = context.run_config
    scenario = load_scenario(resolve_scenario(str(config["scenario"])), simulate=False)
    out = Path(str(config.get("out") or scenario.output)).expanduser().resolve()
    log.info("sparcl-fleet: scenario %s (%d devices, %d rounds) -> %s", scenario.name, scenario.fleet.devices,
             scenario.federation.rounds, out)

    def on_round(row: dict) -> None:
        log.info("sparcl-fleet: round %s: %s of %s sampled devices accepted, Class-IL %s%%", row["round"],
                 row["accepted"], row["sampled"], row.get("class_il_accuracy"))

    summary = run_scenario(scenario, out, on_round=on_round, verbose=True,
                           force=config_flag(config.get("force")), resume=config_flag(config.get("resume")),
                           launch=lambda server_app: server_app(grid, context))
    log.info("sparcl-fleet: %s, final Class-IL %s%% after %s rounds; wrote %s", summary["status"],
             summary["final_accuracy"], summary["rounds_completed"], out)
    if summary["status"] == "failed":  # every reply failed: Flower's run fails too, so `fleet submit` exits 1
        raise RuntimeError(f"no device's update was aggregated ({summary['failed_replies']} app errors, "
                           f"{summary['rejected_updates']} rejected, {summary.get('timed_out_replies', 0)} timed out)")
