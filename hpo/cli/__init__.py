"""The ``hpo`` command line: ``main``, the parser, exit codes and logging set-up.

One subcommand per verb, each a small function registered with :func:`hpo.cli._registry.command` by its
module: :mod:`hpo.cli.run` (run, worker, create), :mod:`hpo.cli.inspect` (validate, status, dashboard, keys),
:mod:`hpo.cli.train` (train) and :mod:`hpo.cli.results` (export, report, narrow, reevaluate, analyze,
compare); what they print for people is in :mod:`hpo.cli._output`. Heavy libraries (torch, optuna, ray,
plotly, pandas, sqlalchemy) and the heavy ``hpo`` modules are imported inside the commands, so ``hpo --help``
is fast. User errors (:class:`hpo.errors.HpoError`) print one line each and exit with the error's code, 2
for a bad spec, name or command line (``--debug`` shows the traceback); Ctrl-C / SIGTERM exit 128 + signal.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hpo import __version__
from hpo.cli import run, inspect, train, results  # noqa: F401, I001  (each registers its commands; `hpo --help` order)
from hpo.cli._registry import COMMANDS
from hpo.errors import HpoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpo",
        description="fusion-hpo: hyperparameter optimisation for multimodal fusion models",
    )
    parser.add_argument("--version", action="version", version=f"fusion-hpo {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


class _Handler(logging.StreamHandler):
    """Log lines to the progress bar's stream, or to ``sys.stderr`` as it is when the line is written (not
    the stream of when the handler was made: a caller may have replaced it since, and closed the old one)."""

    def emit(self, record: logging.LogRecord) -> None:
        from hpo.cli._output import ProgressState

        if ProgressState.bar is not None:
            ProgressState.bar.write(self.format(record), file=sys.stderr)
        else:
            self.stream = sys.stderr
            super().emit(record)


def _setup_logging(args: argparse.Namespace) -> None:
    handler = _Handler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.getLogger("hpo").setLevel(level)
    logging.getLogger("models").setLevel(level)
    try:
        import optuna

        optuna.logging.set_verbosity(logging.DEBUG if args.verbose > 1 else logging.WARNING)
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
    except ImportError:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if args.command not in ("validate",):
        _setup_logging(args)
    else:
        logging.basicConfig(level=logging.WARNING)
    from hpo.train.interrupt import graceful_sigint

    t0 = time.monotonic()
    try:
        if args.command in ("run", "worker", "train"):
            with graceful_sigint():
                return COMMANDS[args.command].run(args)
        return COMMANDS[args.command].run(args)
    except HpoError as e:
        if args.debug:
            raise
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        import signal

        from hpo.train.interrupt import last_signal

        signum = last_signal() or signal.SIGINT  # SIGTERM (docker stop, Kubernetes, Slurm) is handled like Ctrl-C
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        lead = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C
        print(f"{lead}{what} after {time.monotonic() - t0:.0f}s: the running trial is recorded as interrupted and runs "
              "again when you run the same command (the study resumes)", file=sys.stderr)
        return 128 + signum
