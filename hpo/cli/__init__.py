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
from hpo.cli import run, inspect, train, results, schema, data, tensorboard, completion  # noqa: F401, I001  (each registers its commands; `hpo --help` order)
from hpo.cli._registry import COMMANDS
from hpo.errors import HpoError


STORAGE_ENV = "HPO_STORAGE"  # a storage URL used wherever --storage is, when --storage is not given

# The global flags: on the top-level parser (``hpo -v run s.yaml``) and again on every subcommand's parser
# (``hpo run s.yaml -v``) under their own dests, merged by :func:`_merge_global_flags`.
_GLOBAL_FLAGS = (
    (("-v", "--verbose"), dict(action="count", default=0, help="more log output (-vv: debug)")),
    (("-q", "--quiet"), dict(action="store_true", help="only warnings and errors")),
    (("--debug",), dict(action="store_true", help="show tracebacks of errors")),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpo",
        description="fusion-hpo: hyperparameter optimisation for multimodal fusion models",
    )
    parser.add_argument("--version", action="version", version=f"fusion-hpo {__version__}")
    for flags, kw in _GLOBAL_FLAGS:
        parser.add_argument(*flags, **kw)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        _add_global_flags(p)
    return parser


def _add_global_flags(p: argparse.ArgumentParser) -> None:
    """The global flags on a subcommand's parser (and its own subcommands'), stored as ``sub_<dest>`` so they
    add to the top-level ones instead of replacing them; ``--storage`` says that HPO_STORAGE stands in for it."""
    group = p.add_argument_group("global options (also before the command)")
    for flags, kw in _GLOBAL_FLAGS:
        free = [f for f in flags if f not in p._option_string_actions]  # a command's own flag wins
        if free:
            dest = "sub_" + flags[-1].lstrip("-")
            group.add_argument(*free, dest=dest, **{**kw, "default": argparse.SUPPRESS})
    storage = p._option_string_actions.get("--storage")
    if storage is not None and STORAGE_ENV not in (storage.help or ""):
        storage.help = (storage.help or "storage URL") + f"; ${STORAGE_ENV} when not given"
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_global_flags(child)


def _merge_global_flags(args: argparse.Namespace) -> None:
    """``-v`` counts wherever it is given (``hpo -v run s.yaml -v`` is -vv); -q and --debug hold if given anywhere."""
    args.verbose = args.verbose + vars(args).pop("sub_verbose", 0)
    args.quiet = args.quiet or vars(args).pop("sub_quiet", False)
    args.debug = args.debug or vars(args).pop("sub_debug", False)


def _storage_from_env(args: argparse.Namespace) -> None:
    """``$HPO_STORAGE`` for a command that takes ``--storage`` and was not given it. Precedence: --storage >
    HPO_STORAGE > the study file's ``storage:`` > sqlite:///runs/hpo.db. A URL with a secret is refused
    (exit 2, redacted) like one given with --storage."""
    import os

    if "storage" not in vars(args) or args.storage:
        return
    url = os.environ.get(STORAGE_ENV, "").strip()
    if url:
        from hpo.spec.urls import check_url

        try:
            check_url(url)
        except HpoError as e:
            raise type(e)(f"${STORAGE_ENV}: {e}") from None
        args.storage = url


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
    _merge_global_flags(args)
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
        _storage_from_env(args)
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
