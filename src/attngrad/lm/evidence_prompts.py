"""Seeded prompts with a known answer in the context: the in-context evidence benchmark's prompt set.

Each prompt lists a few short facts and ends with a question about one of them, so the fact that
answers is known by construction (docs/lm.md, "Evidence test"). Five kinds:

* ``city``: ``"Anna lives in Oslo. Ben lives in Lima. Carl lives in Rome.\nQuestion: Where does Ben
  live?\nAnswer: Ben lives in"`` -> ``" Lima"``;
* ``attribute``: ``"Anna's car is red. Ben's car is blue. ...\nQuestion: What colour is Ben's car?\nAnswer:
  Ben's car is"`` -> ``" blue"``;
* ``count``: ``"Anna has three apples. Ben has seven pears. ...\nQuestion: How many pears does Ben
  have?\nAnswer: Ben has"`` -> ``" seven"``;
* ``arithmetic``: ``"Anna has three coins. Ben has five coins. ...\nQuestion: Ben finds one more coin. How
  many coins does Ben have now?\nAnswer: Ben has"`` -> ``" six"``;
* ``distractor``: a fact sharing the question's name and words answers something else:
  ``"Anna works in Lima. Ben lives in Rome. Anna lives in Oslo.\nQuestion: Where does Anna live?\nAnswer:
  Anna lives in"`` -> ``" Oslo"``.

Numbers are words (``" seven"``), not digits: SmolLM2 spells ``" 7"`` as two tokens, ``" "`` then ``"7"``.

The evidence is the answering fact's sentence (without its full stop) and the distractors are the
other facts, both as character spans of the text; :func:`token_spans` turns them into token positions
through the tokenizer's character offsets, so any (BPE, word-level) fast tokenizer maps them exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import AttngradError

KINDS = ("city", "attribute", "count", "arithmetic", "distractor")

_NAMES = ("Anna", "Ben", "Carl", "Dana", "Emma", "Frank", "Grace", "Henry", "Ivan", "Julia", "Kate", "Leo",
          "Mia", "Nora", "Oscar", "Paul", "Rosa", "Sam", "Tom", "Vera")
_CITIES = ("Oslo", "Lima", "Rome", "Paris", "Berlin", "Madrid", "London", "Tokyo", "Cairo", "Dublin", "Vienna",
           "Prague", "Moscow", "Sydney", "Boston", "Chicago", "Toronto", "Athens")
_COLOURS = ("red", "blue", "green", "black", "white", "yellow", "pink", "brown", "orange", "purple")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_THINGS = ("apples", "pears", "books", "cats", "dogs", "pens", "cups", "hats", "keys", "shoes")


@dataclass(frozen=True)
class EvidencePrompt:
    """A prompt, its answer and where in the text the answering fact and the other facts are.

    ``evidence`` and ``distractors`` are ``(start, end)`` character spans of ``text``.
    """

    text: str
    target: str
    kind: str
    evidence: tuple[tuple[int, int], ...]
    distractors: tuple[tuple[int, int], ...] = field(default=())


def _assemble(facts: Sequence[str], answer: int, question: str, target: str, kind: str,
              distractor_only: Sequence[int] | None = None) -> EvidencePrompt:
    text, spans = "", []
    for fact in facts:
        start = len(text) + (1 if text else 0)
        text = (text + " " if text else "") + fact + "."
        spans.append((start, start + len(fact)))
    text += "\nQuestion: " + question
    others = [s for k, s in enumerate(spans) if k != answer and (distractor_only is None or k in distractor_only)]
    return EvidencePrompt(text, target, kind, (spans[answer],), tuple(others))


def _one(kind: str, rng: random.Random, facts: int) -> EvidencePrompt:
    names = rng.sample(_NAMES, facts)
    ask = rng.randrange(facts)
    who = names[ask]
    if kind == "city":
        cities = rng.sample(_CITIES, facts)
        return _assemble([f"{n} lives in {c}" for n, c in zip(names, cities)], ask,
                         f"Where does {who} live?\nAnswer: {who} lives in", " " + cities[ask], kind)
    if kind == "attribute":
        colours = rng.sample(_COLOURS, facts)
        return _assemble([f"{n}'s car is {c}" for n, c in zip(names, colours)], ask,
                         f"What colour is {who}'s car?\nAnswer: {who}'s car is", " " + colours[ask], kind)
    if kind == "count":
        counts, things = rng.sample(range(2, 10), facts), rng.sample(_THINGS, facts)
        return _assemble([f"{n} has {_NUMBERS[k]} {t}" for n, k, t in zip(names, counts, things)], ask,
                         f"How many {things[ask]} does {who} have?\nAnswer: {who} has", " " + _NUMBERS[counts[ask]], kind)
    if kind == "arithmetic":
        counts = rng.sample(range(1, 9), facts)
        return _assemble([f"{n} has {_NUMBERS[k]} coins" for n, k in zip(names, counts)], ask,
                         f"{who} finds one more coin. How many coins does {who} have now?\nAnswer: {who} has",
                         " " + _NUMBERS[counts[ask] + 1], kind)
    if kind == "distractor":
        cities = rng.sample(_CITIES, facts + 1)
        lines = [f"{n} lives in {c}" for n, c in zip(names, cities)]
        # the same person works elsewhere: shares the name and "in" with the question
        lines.insert(ask, f"{who} works in {cities[-1]}")
        return _assemble(lines, ask + 1, f"Where does {who} live?\nAnswer: {who} lives in", " " + cities[ask], kind)
    raise AttngradError(f"unknown evidence kind {kind!r}; choose from {', '.join(KINDS)}")


def evidence_prompts(count: int = 500, *, seed: int = 0, facts: int = 3,
                     kinds: Sequence[str] = KINDS) -> list[EvidencePrompt]:
    """``count`` prompts, the kinds in turn, from ``random.Random(seed)`` (same seed, same prompts)."""
    if count < 0:
        raise AttngradError(f"the prompt count must be at least 0, not {count}")
    if not 2 <= facts <= 8:
        raise AttngradError(f"facts per prompt must be 2..8, not {facts}")
    for kind in kinds:
        if kind not in KINDS:
            raise AttngradError(f"unknown evidence kind {kind!r}; choose from {', '.join(KINDS)}")
    rng = random.Random(seed)
    return [_one(kinds[i % len(kinds)], rng, facts) for i in range(count)]


def token_spans(tokenizer, text: str, spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token positions (of ``tokenizer(text)`` with its special tokens) overlapping each character span.

    A token belongs to a span when its character range ``[a, b)`` (from the fast tokenizer's offsets)
    overlaps it; special tokens (empty range) never do. A BPE token ``" Lima"`` whose range starts on
    the space before the span still overlaps it.
    """
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    out = []
    for start, end in spans:
        out.append([j for j, (a, b) in enumerate(offsets) if b > a and a < end and b > start])
    return out
