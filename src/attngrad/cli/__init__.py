"""The ``attngrad`` command line: argument parsing and messages only; the work is in the library.

Every mistake a user can make ends the same way, whichever command and whichever layer
finds it (click's option checks, the library's :class:`AttngradError`, a missing file):
ONE line ``attngrad: error: ...`` on stderr, exit code 2, no traceback (``--debug`` shows
it), and no empty output folder left behind (see :mod:`.common`, ``OutDir``).
"""

from __future__ import annotations

import sys

import click

from ..errors import AttngradError
from ..methods import METHODS
from .common import remove_unused_outputs


def _command_name(ctx: click.Context | None) -> str:
    """``attngrad evaluate perturbation`` for the context of that command (``attngrad`` at the top)."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["attngrad", *names])


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def usage_error_line(err: click.ClickException) -> str:
    """click's usage errors (bad option value, missing argument, unknown option) in our one-line form."""
    ctx = getattr(err, "ctx", None)
    message = _one_line(err.format_message()).rstrip(".")
    if message[:2] != message[:2].upper():  # click's "Invalid value ..." -> "invalid value ..."
        message = message[:1].lower() + message[1:]
    if ctx is None:
        return f"attngrad: error: {message}"
    name = _command_name(ctx)
    where = name.removeprefix("attngrad").strip()
    return f"attngrad: error: {where + ': ' if where else ''}{message} (see '{name} --help')"


def _unreadable_file(err: BaseException) -> str | None:
    """The one-line message for a weights or data file that cannot be read (truncated, corrupt), else ``None``."""
    import pickle
    import zipfile

    said = _one_line(str(err))[:300]
    if type(err).__name__ == "SafetensorError" or isinstance(err, (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)):
        return f"a model or data file cannot be read (truncated or corrupt?): {said}"
    if isinstance(err, RuntimeError) and ("PytorchStreamReader" in said or "central directory" in said):
        return f"a weights file cannot be read (truncated or corrupt?): {said}"
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not valid UTF-8 text: {said}"
    if isinstance(err, OSError) and err.errno is not None:  # name too long, disk full, permission denied, ...
        name = f": {str(err.filename)[:80]}{'...' if len(str(err.filename)) > 80 else ''}" if err.filename else ""
        return f"{err.strerror or type(err).__name__}{name}"
    return None


def _check_text(args: list[str]) -> None:
    """Arguments must be text: bytes that are not UTF-8 arrive as lone surrogates and are refused here."""
    for i, arg in enumerate(args):
        if isinstance(arg, str):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                shown = repr(arg.encode("utf-8", "surrogateescape"))[2:-1][:60]  # the bytes as given
                _fail(f"attngrad: error: argument {i + 1} ('{shown}') is not valid UTF-8; give text (and file names) in UTF-8")


def _fail(line: str) -> None:
    click.echo(line, err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns usage errors, :class:`AttngradError` and missing-file errors into one line and exit code 2."""

    def make_context(self, info_name, args, parent=None, **extra):  # errors in the top-level options
        if parent is None:
            _check_text(list(args))
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            _fail(usage_error_line(err))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            remove_unused_outputs(ctx)
            raise
        except click.ClickException as err:  # UsageError, BadParameter, FileError, ... from any command
            remove_unused_outputs(ctx)
            if isinstance(err, click.UsageError):
                _fail(usage_error_line(err))
            _fail(f"attngrad: error: {_one_line(err.format_message())}")
        except (AttngradError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            remove_unused_outputs(ctx)
            if ctx.params.get("debug"):
                raise
            _fail(f"attngrad: error: {_one_line(str(err))}")
        except BaseException as err:  # a bug, Ctrl+C, or an exit code: still no empty folder left behind
            if not (isinstance(err, SystemExit) and err.code in (0, None)):
                remove_unused_outputs(ctx)
            message = None if isinstance(err, (SystemExit, KeyboardInterrupt)) else _unreadable_file(err)
            if message is not None and not ctx.params.get("debug"):
                _fail(f"attngrad: error: {message}")
            raise


def _help() -> str:
    names = list(METHODS)
    return (
        "Explain what a Vision Transformer looked at, from its attention maps and their gradients.\n\n"
        f"Methods ({len(names)}): {', '.join(names)}; complete (Cui, Fan & Chen, eq. 5) is the default. "
        "IMAGE arguments are files, or the short name of a shipped sample image when no such file "
        "exists (e.g. el1, catdog, zebra). Mistakes print one line 'attngrad: error: ...' and exit "
        "with code 2. Run `attngrad COMMAND --help` for each command."
    )


@click.group(cls=_Group, help=_help(), context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="attngrad")
def main(debug: bool) -> None:
    pass


# The command modules register themselves on ``main`` (or its groups, e.g. ``evaluate``) when imported.
from . import (  # noqa: E402, F401
    alignment,
    attribution_error,
    clip,
    compare,
    evaluate,
    experiments,
    explain,
    grid,
    lm,
    lm_evidence,
    seq2seq,
    serve,
    text,
    vlm,
)
