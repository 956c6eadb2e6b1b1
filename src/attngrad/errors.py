"""The one exception type for mistakes a user can make (bad file, unknown class, ...).

The CLI turns it into a single line on stderr and exit code 2; its message always
says what is wrong and what to do about it. The server turns it into ``422`` with
the wrong input's name (``field``) and its valid values (``choices``) when known.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any


class AttngradError(ValueError):
    """A user-fixable problem: the message says what is wrong and what to do.

    Args:
        message: what is wrong and what to do.
        field: which input was wrong, when one is (``"method"``, ``"target"``, ``"loss"``, ...).
        choices: the valid values of that input, when they are a short known list.
    """

    def __init__(self, *args: Any, field: str | None = None, choices: Iterable[Any] | None = None):
        super().__init__(*args)
        self.field = field
        self.choices = None if choices is None else list(choices)

    def __reduce__(self):  # keep ``field`` and ``choices`` through pickling (worker processes)
        return functools.partial(type(self), field=self.field, choices=self.choices), self.args


class MultiTokenWarning(UserWarning):
    """A target or contrast text is longer than one token; only its first token is explained."""


def warn_first_token(what: str, spec: str, pieces: list[str]) -> None:
    """Warn (:class:`MultiTokenWarning`) that ``spec``, a text of several tokens ``pieces``, is explained by its first."""
    import warnings

    warnings.warn(f"{what} {spec!r} is {len(pieces)} tokens {pieces}; explaining its first token {pieces[0]!r}",
                  MultiTokenWarning, stacklevel=5)  # the caller of the explainer method


def refuse_unknown_token(tokenizer: object, what: str, spec: str, first: int) -> None:
    """Refuse a target or contrast text whose first token ``first`` is the tokenizer's unknown token (the word is not
    in the vocabulary: its map would explain ``<unk>``), unless the text names that token itself."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is not None and first == unknown and spec.strip() != getattr(tokenizer, "unk_token", None):
        raise AttngradError(f"{what} {spec!r} is not in this model's vocabulary (it tokenises to the unknown token "
                            f"{getattr(tokenizer, 'unk_token', None)!r}); give a word the model knows")


def unknown_positions(tokenizer: object, text: str, ids: Sequence[int]) -> list[int]:
    """Where ``ids`` (the tokens of ``text``) hold the tokenizer's unknown token: words it does not know. Empty when
    the tokenizer has no such token, or when the text writes that token itself."""
    unknown, name = getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "unk_token", None)
    if unknown is None or (name and name in text):
        return []
    return [j for j, i in enumerate(ids) if int(i) == unknown]


def refuse_unknown_text(tokenizer: object, what: str, text: str, ids: Sequence[int]) -> None:
    """Refuse a text every token of which (special tokens left out) is the tokenizer's unknown token ("🦓🦓" for a
    WordPiece vocabulary): its scores would all be on ``[UNK]``, which shows none of its words."""
    if ids and len(unknown_positions(tokenizer, text, ids)) == len(ids):
        raise AttngradError(f"{what} {text[:30]!r} has no word this model knows: every token is the unknown token "
                            f"{getattr(tokenizer, 'unk_token', None)!r}; give words of its vocabulary")
