"""The one error boundary every command runs behind.

A ``StarcliError`` becomes ``starcli: error: <message>`` and its exit code; a closed stdout
(``| head``) ends quietly; Ctrl-C is one line and exit 130; anything else is a defect, still one
line naming its type, with the traceback under ``--debug``. Usage errors of the option parser
itself are turned into the same one line by ``usage_message``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

import typer
# typer carries its own copy of click; its usage errors are these classes
from typer._click import Context
from typer._click.core import Parameter, ParameterSource
from typer._click.exceptions import BadParameter, UsageError

INTERRUPTED = 130


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: ended like Ctrl-C (what the command started ends with it), with the
    signal's exit status."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop_on_signal(signum, frame) -> None:
    raise Stopped(signum)


def exit_status(exc: KeyboardInterrupt) -> int:
    return 128 + exc.signum if isinstance(exc, Stopped) else INTERRUPTED


class OutputError(Exception):
    """Standard output cannot be written (a full disk, an I/O error)."""


class ReaderGone(Exception):
    """Standard output's reader went away (`| head`): the command ends quietly. Not an OSError,
    which the option parser would turn into exit 1."""


class CheckedOutput:
    """Standard output whose write failures (other than a reader gone away, which ends quietly)
    become one error line instead of an OSError from deep inside a command."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise ReaderGone() from None
        except OSError as exc:
            raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise ReaderGone() from None
        except OSError as exc:
            raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None


def fail(message: str, code: int) -> None:
    print(f"starcli: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def interrupted(exc: KeyboardInterrupt | None = None) -> None:
    print("\nstarcli: interrupted" if not isinstance(exc, Stopped) else
          f"\nstarcli: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
    raise typer.Exit(exit_status(exc) if exc is not None else INTERRUPTED)


def quiet_broken_pipe() -> None:
    """The reader went away (`| head`): stop quietly, and keep Python from complaining at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run_command(debug: bool, body: Callable[[], object]) -> None:
    """Run a command's body, turning every failure into one line and an exit code."""
    try:
        from ..errors import StarcliError

        if not debug:
            # library warnings are not for users of a command line tool; --debug shows them
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
    except KeyboardInterrupt as exc:
        interrupted(exc)
    try:
        body()
    except StarcliError as exc:
        _trace(debug)
        fail(str(exc), exc.code)
    except OutputError as exc:
        fail(str(exc), 1)
    except (BrokenPipeError, ReaderGone):
        quiet_broken_pipe()
        raise typer.Exit(0)
    except KeyboardInterrupt as exc:
        interrupted(exc)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else is still one line unless --debug
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        fail(f"{type(exc).__name__}: {first} (run with --debug for the traceback)", 1)


def _trace(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()


def usage_message(exc: UsageError) -> str:
    """One line: a bad value names the option as typed, or the environment variable it came from."""
    if isinstance(exc, BadParameter) and exc.param is not None and exc.param.param_type_name == "option":
        return f"invalid value for {_given_as(exc.param, exc.ctx)}: {exc.message}"
    return " ".join(exc.format_message().split())


def _given_as(param: Parameter, ctx: Context | None) -> str:
    if ctx is not None and param.name and ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT:
        return f"{param.envvar} (the environment variable behind {max(param.opts, key=len)})"
    return max(param.opts, key=len)
