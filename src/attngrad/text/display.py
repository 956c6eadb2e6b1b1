"""Word-level display of token maps: words, an HTML page, a coloured terminal view, JSON.

Word pieces are merged back into the words of the original text (the tokenizer's
word ids and character offsets); a word's score is the sum of its pieces' scores
(rollout scores are additive over tokens). Colours follow the images' rules
(method.md, "Display"; :mod:`attngrad.viz`): ``S / max|S|`` per text over its words,
the same diverging colormap on the fixed range [-1, 1] — red supports the loss,
white is 0, blue opposes it — and a colour bar. Colours compare words within one
text, never across texts.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .. import viz

if TYPE_CHECKING:
    from .results import TextExplanation


@dataclass
class Word:
    """A word of the text with its score: ``text[start:end]``, summed over its word pieces."""

    text: str
    score: float
    start: int
    end: int


def merge_words(
    text: str,
    tokens: Sequence[str],
    scores: Sequence[float],
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    keep: Sequence[bool],
) -> list[Word]:
    """Group consecutive word pieces of the same word; special tokens (``keep`` false) are dropped.

    With character offsets the word is the original text's span (case and accents kept);
    without them (slow tokenizers) the pieces are joined with their ``##`` removed.
    """
    words: list[Word] = []
    previous = None
    for token, score, word, (start, end), k in zip(tokens, scores, word_ids, offsets, keep):
        if not k:
            previous = None
            continue
        if words and word is not None and word == previous:
            last = words[-1]
            last.score += score
            if end > start:
                last.end = max(last.end, end)
                last.text = text[last.start : last.end]
            else:
                last.text += token.removeprefix("##")
        else:
            words.append(Word(text[start:end] if end > start else token, float(score), start, end))
        previous = word
    return words


colours = viz.rgb_colours


def normalized_words(words: Sequence[Word]) -> list[float]:
    """``S / max|S|`` over a text's words (all zero stays zero)."""
    return viz.normalize(np.array([w.score for w in words], dtype=np.float64)).tolist() if words else []


def _render(text: str, words: Sequence[Word], word_part, gap_part=lambda gap: gap) -> str:
    """The whole text: each word as ``word_part(word, S/max|S|)``, the gaps between words as ``gap_part(gap)``."""
    out, position = [], 0
    for word, value in zip(words, normalized_words(words)):
        if word.end > word.start:
            out.append(gap_part(text[position : word.start]))
            position = word.end
        else:  # no character offsets: words joined by spaces
            out.append(" " if out else "")
        out.append(word_part(word, value))
    if position:
        out.append(gap_part(text[position:]))
    return "".join(out)


def terminal(text: str, words: Sequence[Word], colour: bool = True) -> str:
    """The text with each word on a 24-bit ANSI background of its colour (or ``word[+0.52]`` without colour)."""

    def render(word: Word, value: float) -> str:
        if not colour:
            return f"{word.text}[{value:+.2f}]"
        bg = colours([value])[0]
        (r, g, b), (fr, fg, fb) = bg, viz.ink(bg)
        return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;{fr};{fg};{fb}m{word.text}\x1b[0m"

    return _render(text, words, render)


def colour_bar_html() -> str:
    """A horizontal colour bar for [-1, 1] as an HTML fragment (a CSS gradient of the colormap)."""
    return viz.colour_bar_html("S / max|S| per text (red: supports, blue: opposes)")


def html_text(text: str, words: Sequence[Word]) -> str:
    """One text as HTML: each word on its colour, its raw score in the tooltip."""

    def render(word: Word, value: float) -> str:
        bg = colours([value])[0]
        return (
            f'<span style="background: rgb{bg}; color: rgb{viz.ink(bg)}" title="score {word.score:.4g} '
            f'({value:+.2f})">{html.escape(word.text)}</span>'
        )

    return _render(text, words, render, html.escape)


_STYLE = viz.HTML_STYLE


def describe(result: "TextExplanation", index: int) -> str:
    """What was explained, in words: ``complete, logit of 'repair' (0.412)``."""
    target = result.target_names[index]
    value = float(result.logits[index, result.targets[index]])
    what = f"{result.loss} of {target!r} ({value:.3f})"
    contrast_names = result.contrast_names  # None exactly when there are no contrasts
    if contrast_names is not None:
        what = f"{result.loss} of {target!r} vs {contrast_names[index]!r}"
    if result.task == "similarity":
        what = f"cos(A, B) = {value:.3f}"
    return f"{result.method}, {what}"


def to_html(results: Sequence["TextExplanation"], title: str = "attngrad text explanations") -> str:
    """A self-contained HTML page with every text of every result (and the partner texts for similarity)."""
    sections = []
    for res in results:
        for i, text in enumerate(res.texts):
            sections.append(f"<h2>{html.escape(describe(res, i))}</h2>")
            sections.append(f'<div class="text">{html_text(text, res.words(i))}</div>')
            if res.reverse is not None:
                sections.append('<div class="meta">the other direction (B, explained against A):</div>')
                sections.append(f'<div class="text">{html_text(res.reverse.texts[i], res.reverse.words(i))}</div>')
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{colour_bar_html()}"
        + "\n".join(sections)
        + "</body></html>"
    )


def to_records(result: "TextExplanation") -> list[dict]:
    """JSON-ready records: per text, raw token scores, word scores and what was explained."""
    records = []
    contrast_names = result.contrast_names
    for i, text in enumerate(result.texts):
        record: dict[str, object] = {
            "text": text,
            "task": result.task,
            "method": result.method,
            "loss": result.loss,
            "target": result.target_names[i],
            "contrast": None if contrast_names is None else contrast_names[i],
            "logits": dict(zip(result.labels, [float(v) for v in result.logits[i].tolist()])),
            "tokens": [{"token": t, "score": s} for t, s in result.token_scores(i)],
            "words": [asdict(w) for w in result.words(i)],
        }
        if result.reverse is not None:
            record["against"] = {
                "text": result.reverse.texts[i],
                "tokens": [{"token": t, "score": s} for t, s in result.reverse.token_scores(i)],
                "words": [asdict(w) for w in result.reverse.words(i)],
            }
        records.append(record)
    return records


def save_json(path: str | Path, results: Sequence["TextExplanation"]) -> Path:
    """Raw scores of every result as one JSON file (a list of records, see :func:`to_records`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r for res in results for r in to_records(res)], indent=1))
    return path


def save_html(path: str | Path, results: Sequence["TextExplanation"], title: str = "attngrad text explanations") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_html(results, title), encoding="utf-8")
    return path
