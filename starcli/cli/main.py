"""The starcli command line: the Typer application and its entry point.

Only the standard library and the option parser load at startup: the commands load ``app``,
torch and transformers inside their bodies, so ``--version`` and ``--help`` answer at once and a
Ctrl-C while the heavy libraries load is one line, not a traceback.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
    # While this module loads, Ctrl-C would raise inside whatever is being imported and end in a
    # traceback; there is nothing to clean up yet, so leave at once.
    print("\nstarcli: interrupted", file=sys.stderr)
    os._exit(130)


# restored at the end of this module, so importing it (tests, the usage generator) changes nothing
_sigint_before_import = signal.signal(signal.SIGINT, _interrupted_while_starting)

from typing import Annotated  # noqa: E402 - the handler above must be in place before any import that takes time

import typer  # noqa: E402
from typer._click.exceptions import UsageError  # noqa: E402

from .. import __version__  # noqa: E402
from . import bench_eval, commands, serve  # noqa: E402
from .boundary import (INTERRUPTED, CheckedOutput, OutputError, ReaderGone, exit_status,  # noqa: E402
                       quiet_broken_pipe, stop_on_signal, usage_message)

app = typer.Typer(
    name="starcli",
    help="Ask questions about, and summarize, documents far longer than one GPU handles (Star Attention).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # usage errors are one `starcli: error:` line (main), not a box
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(commands.ask)
app.command()(commands.summarize)
app.command()(commands.chat)
app.command("count")(commands.count)
app.command("models")(commands.models)
app.add_typer(commands.cache_app, name="cache")
app.command("serve")(serve.serve)
app.command("worker")(commands.worker)
app.command("bench")(bench_eval.bench)
app.command("eval")(bench_eval.evaluate)


def version_callback(value: bool) -> None:
    if value:
        print(f"starcli {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")] = False):
    pass


# Commands that print nothing on standard output, and so may run with it closed.
_SILENT = {"serve", "worker"}


def main() -> None:
    # From here on Ctrl-C is a KeyboardInterrupt, which the commands turn into exit 130 after
    # ending what they started (ranks, progress display); SIGTERM and SIGHUP end them the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    if sys.stdout is None and not _SILENT & set(sys.argv[1:2]):
        print("starcli: error: standard output is closed: there is nowhere to write the result", file=sys.stderr)
        sys.exit(1)
    if sys.stdout is not None:
        sys.stdout = CheckedOutput(sys.stdout)
    try:
        code = app(standalone_mode=False)
        sys.stdout.flush()  # a late write error is still this command's
    except UsageError as exc:
        print(f"starcli: error: {usage_message(exc)}", file=sys.stderr)
        code = 2
    except OutputError as exc:
        print(f"starcli: error: {exc}", file=sys.stderr)
        code = 1
    except (BrokenPipeError, ReaderGone):
        quiet_broken_pipe()
        code = 0
    except typer.Abort:
        print("\nstarcli: interrupted", file=sys.stderr)
        code = INTERRUPTED
    except KeyboardInterrupt as exc:
        print("\nstarcli: interrupted", file=sys.stderr)
        code = exit_status(exc)
    sys.exit(code if isinstance(code, int) else 0)


signal.signal(signal.SIGINT, _sigint_before_import)

if __name__ == "__main__":
    main()
