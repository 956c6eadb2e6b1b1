"""Views of seq2seq explanations: terminal lines, an HTML page, JSON records, a token-alignment picture.

Words and colours are those of :mod:`attngrad.text.display` (imported, not repeated):
a word's score is the sum of its pieces' scores; colours are ``S / max|S|`` per text on the
diverging colormap of the images (red supports the explained token, blue opposes it,
white is 0). The source text and the target prefix are two texts, each normalised on its
own; compare colours within a text, never across texts.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import viz
from ..text.display import colour_bar_html, html_text, terminal
from .explainer import Seq2SeqExplanation


def describe(result: Seq2SeqExplanation, index: int) -> str:
    """What was explained: ``complete, logit of 'katze' after 2 decoder tokens (3.142)``."""
    position = result.positions[index]
    return (f"{result.method}, {result.loss} of {result.token_names[index]!r} after {position + 1} decoder "
            f"token{'s' if position else ''} ({float(result.values[index]):.4g})")


def _prefix(result: Seq2SeqExplanation, index: int) -> str:
    """The target text up to the end of the last word before the explained token (not the rest)."""
    words = result.target_words(index)
    text = result.targets[index]
    return text[: words[-1].end] if words and words[-1].end > words[-1].start else text


def terminal_lines(result: Seq2SeqExplanation, index: int, colour: bool = True) -> list[str]:
    """Three lines: what was explained, the source coloured, the target prefix coloured."""
    lines = [f"[{describe(result, index)}]", "  source: " + terminal(result.sources[index], result.source_words(index), colour)]
    prefix = result.target_words(index)
    lines.append("  target: " + (terminal(_prefix(result, index), prefix, colour) if prefix else "(start token only)")
                 + f" -> {result.token_names[index]}")
    return lines


def to_records(result: Seq2SeqExplanation) -> list[dict]:
    """JSON-ready records, one per explained token: raw token and word scores of both sides."""
    records = []
    for i in range(len(result.sources)):
        records.append({
            "source": result.sources[i],
            "target": result.targets[i],
            "position": result.positions[i],
            "token": result.token_names[i],
            "token_id": int(result.tokens[i]),
            "value": float(result.values[i]),
            "method": result.method,
            "loss": result.loss,
            "signed": result.signed,
            "source_tokens": [{"token": t, "score": s} for t, s in result.source_tokens(i)],
            "target_tokens": [{"token": t, "score": s} for t, s in result.target_tokens(i)],
            "source_words": [asdict(w) for w in result.source_words(i)],
            "target_words": [asdict(w) for w in result.target_words(i)],
        })
    return records


_STYLE = viz.HTML_STYLE + """
.text { margin: 0.2em 0 0.6em; }
h2 { margin: 1.4em 0 0.2em; }
b.next { border-bottom: 2px solid #333; }
"""


def to_html(results: Sequence[Seq2SeqExplanation], title: str = "attngrad seq2seq explanations") -> str:
    """A self-contained page: per explained token, the source and the target prefix coloured."""
    sections = []
    for res in results:
        for i in range(len(res.sources)):
            sections.append(f"<h2>{html.escape(describe(res, i))}</h2>")
            sections.append('<div class="meta">source</div>')
            sections.append(f'<div class="text">{html_text(res.sources[i], res.source_words(i))}</div>')
            prefix = res.target_words(i)
            shown = html_text(_prefix(res, i), prefix) if prefix else "<i>(start token only)</i>"
            sections.append('<div class="meta">target so far, then the explained token</div>')
            sections.append(f'<div class="text">{shown} &rarr; <b class="next">{html.escape(res.token_names[i])}</b></div>')
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{colour_bar_html()}"
        + "\n".join(sections) + "</body></html>"
    )


def save_html(path: str | Path, results: Sequence[Seq2SeqExplanation]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_html(results), encoding="utf-8")
    return path


def save_json(path: str | Path, results: Sequence[Seq2SeqExplanation]) -> Path:
    """Raw scores of every result as one JSON list (see :func:`to_records`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r for res in results for r in to_records(res)], indent=1))
    return path


def alignment(result: Seq2SeqExplanation, rows: Sequence[int] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """The source maps of several explained tokens of one pair as a matrix, each row ``S / max|S|``.

    Returns ``(matrix (len(rows), source tokens), explained token names, source tokens)``;
    ``rows`` defaults to every row (the result of ``position="all"``).
    """
    rows = list(range(len(result.sources))) if rows is None else list(rows)
    if len({result.sources[r] for r in rows}) != 1:
        raise ValueError("an alignment picture needs rows of one source text")
    tokens = result.batch.source.tokens[rows[0]]
    matrix = np.stack([viz.normalize(result.source_scores[r, : len(tokens)].numpy()) for r in rows])
    return matrix, [result.token_names[r] for r in rows], tokens


def save_alignment(path: str | Path, result: Seq2SeqExplanation, rows: Sequence[int] | None = None) -> Path:
    """A PNG of :func:`alignment`: explained target tokens down, source tokens across, colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    matrix, targets, sources = alignment(result, rows)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(sources), 1.2 + 0.35 * len(targets)))
    image = ax.imshow(matrix, cmap=viz.CMAP, norm=viz.NORM, aspect="auto")
    ax.set_xticks(range(len(sources)), sources, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(targets)), targets, fontsize=8)
    ax.set_xlabel("source token")
    ax.set_ylabel("explained target token")
    ax.set_title(f"{result.method}: each row S / max|S|", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
