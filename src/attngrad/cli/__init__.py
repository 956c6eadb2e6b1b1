"""The ``attngrad`` command line: argument parsing and messages only; the work is in the library.

Errors a user can cause print one line on stderr and exit with code 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import sys

import click

from ..errors import AttngradError


class _Group(click.Group):
    """Turns :class:`AttngradError` (and missing-file errors) into one line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (AttngradError, FileNotFoundError) as err:
            if ctx.params.get("debug"):
                raise
            click.echo(f"attngrad: error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="attngrad")
def main(debug: bool) -> None:
    """Explain what a Vision Transformer looked at, from its attention maps and their gradients.

    Methods: complete (Cui, Fan & Chen, eq. 5; default), gae, absolute, rollout,
    raw_attention, attn_gradcam. Run `attngrad COMMAND --help` for each command.
    """


from . import explain  # noqa: E402,F401  (registers commands)
from . import experiments  # noqa: E402,F401
from . import compare  # noqa: E402,F401
from . import serve  # noqa: E402,F401
from . import evaluate  # noqa: E402,F401
from . import text  # noqa: E402,F401
from . import seq2seq  # noqa: E402,F401
from . import clip  # noqa: E402,F401
from . import lm  # noqa: E402,F401
