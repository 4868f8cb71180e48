"""The `fleet` command: run, compare and validate scenarios; run real devices; benchmark SparCL and kernels.

Thin glue: parse arguments into typed configs (parser, arguments), call the
library (commands), print. Bad input ends with one line on stderr naming the
culprit and exit status 2, before any work starts (output folders and report
paths are checked first). Ctrl-C and SIGTERM end a run within seconds. Every
exit status the command uses is in EXIT_CODES (fleet.cli.exits).
"""

from __future__ import annotations

import os
import sys
import threading

from clients.errors import InputError
from fleet.cli.exits import BAD_INPUT, EXIT_CODES, FAILED, INTERRUPTED, TERMINATED
from fleet.cli.parser import build_parser
from fleet.deploy import DeploymentError
from fleet.run import Terminated, handle_sigterm

__all__ = ["EXIT_CODES", "build_parser", "main"]

def nodes_unavailable() -> type[Exception]:
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
        return BAD_INPUT
    except (nodes_unavailable(), DeploymentError) as err:
        print(f"fleet: error: {err}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print("fleet: terminated" if terminated else "fleet: interrupted", file=sys.stderr)
        return leave(TERMINATED if terminated else INTERRUPTED)
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
