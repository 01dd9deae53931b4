"""`python -m deploy list | export | predict | bench | report | compare | profile | doctor | passes | inspect |
debug-precision | worker`.

Every user-fixable problem ends as one `error:` line and a non-zero exit; `--debug` (or DEPLOY_DEBUG=1)
shows tracebacks. `parser` holds the arguments, `commands` and `bench_commands` what each command does.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from .bench_commands import cmd_bench, cmd_compare, cmd_report
from .cluster_commands import cmd_worker
from .commands import (
    cmd_debug_precision,
    cmd_doctor,
    cmd_export,
    cmd_inspect,
    cmd_list,
    cmd_passes,
    cmd_predict,
    cmd_profile,
)
from .parser import build_parser

EXIT_USER_ERROR = 2
EXIT_FAILED = 1

COMMANDS = {"list": cmd_list, "export": cmd_export, "bench": cmd_bench, "report": cmd_report,
            "compare": cmd_compare, "doctor": cmd_doctor, "passes": cmd_passes, "inspect": cmd_inspect,
            "debug-precision": cmd_debug_precision, "profile": cmd_profile, "predict": cmd_predict,
            "worker": cmd_worker}


class _Stderr(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when the note comes, not as it was when `main` first ran (a caller, a test,
    may have replaced it since: a handler bound to the old stream writes to a closed file)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def _notes_to_stderr() -> Iterator[None]:
    """The stages' `deploy` logger (notes such as a sweep of killed runs' leftovers) as `note:` lines while one
    command runs. The logger is put back as it was on the way out: `main` called in-process (a test, a notebook)
    would otherwise leave `propagate` off for good, and the caller's own handlers (pytest's caplog) would see
    nothing of later notes."""
    logger = logging.getLogger("deploy")
    if logger.handlers:  # the caller configured it
        yield
        return
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a library's basicConfig (onnxruntime's quantizer) would print each note twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.debug = args.debug or os.environ.get("DEPLOY_DEBUG") == "1"
    with _notes_to_stderr():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    debug = args.debug
    if not debug:  # the runtimes' import-time warnings; --debug shows them
        from runtimes.import_noise import silence

        silence()
    from deploy.errors import DeployError, IntegrityError, ParityError
    from models import ModelError
    from runtimes import RuntimeAdapterError

    try:
        return COMMANDS[args.command](args)
    except (DeployError, ModelError, RuntimeAdapterError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, (ParityError, IntegrityError)) else EXIT_USER_ERROR  # gate, refused load
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error. Point stdout at devnull so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); re-run with --debug for the traceback",
              file=sys.stderr)
        return EXIT_FAILED
