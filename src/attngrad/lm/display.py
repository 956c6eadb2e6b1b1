"""Views of language-model explanations: coloured terminal text, HTML pages, JSON.

Colours follow the images' and texts' rules (method.md, "Display"; :mod:`attngrad.text.display`):
``S / max|S|`` per prompt, the diverging colormap on [-1, 1] — red supports the loss, white
is 0, blue opposes it — one colour bar; raw values on hover. ``hide_first`` leaves the first
token (often the attention sink) out of the normalisation and shows it grey: out of the
display, never out of the maths.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .. import viz

if TYPE_CHECKING:
    from .explainer import GenerationExplanation, LMExplanation

_GREY = (221, 221, 221)

_STYLE = viz.HTML_STYLE + """
body { max-width: 70em; }
.text span { padding: 0.1em 0; }
"""


colours = viz.rgb_colours


def colour_bar_html() -> str:
    """A horizontal colour bar for [-1, 1] (a CSS gradient of the colormap)."""
    return viz.colour_bar_html("S / max|S| per prompt (red: supports, blue: opposes; magnitude methods are never blue)")


def normalized(scores: Sequence[float], hide_first: bool = False) -> list[float | None]:
    """``S / max|S|`` over the shown tokens (``None`` for a hidden first token; all zero stays zero)."""
    shown = list(scores[1:] if hide_first else scores)
    top = max((abs(s) for s in shown if not math.isnan(s)), default=0.0)
    values = [s / top if top > 0 else 0.0 for s in shown]
    return ([None] if hide_first and scores else []) + values


def _visible(token: str) -> str:
    return token.replace("\n", "\\n") if token.strip() else token.replace("\n", "\\n") or "∅"


def terminal(tokens: Sequence[str], scores: Sequence[float], *, colour: bool = True, hide_first: bool = False) -> str:
    """Tokens joined, each on a 24-bit ANSI background of its colour (or ``token[+0.52]`` without colour)."""
    out = []
    for token, value in zip(tokens, normalized(scores, hide_first)):
        text = _visible(token)
        if not colour:
            out.append(f"{text}[{'hidden' if value is None else format(value, '+.2f')}]")
            continue
        bg = _GREY if value is None else colours([value])[0]
        (r, g, b), (fr, fg, fb) = bg, viz.ink(bg)
        out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;{fr};{fg};{fb}m{text}\x1b[0m")
    return "".join(out)


def describe(result: "LMExplanation", index: int) -> str:
    """What was explained: ``complete, diff of ' Paris' (p=0.41) vs ' Rome'``."""
    what = f"{result.loss} of {result.target_text[index]!r} (p={result.probability(index):.2f})"
    if result.contrast_text is not None:  # set exactly when there are contrasts
        what += f" vs {result.contrast_text[index]!r}"
    return f"{result.method}, {what}"


def _span(token: str, score: float, value: float | None) -> str:
    bg = _GREY if value is None else colours([value])[0]
    label = "hidden from the colours" if value is None else f"{value:+.2f}"
    return (f'<span style="background: rgb{bg}; color: rgb{viz.ink(bg)}" title="score {score:.4g} ({label})">'
            f"{html.escape(_visible(token))}</span>")


def html_tokens(tokens: Sequence[str], scores: Sequence[float], hide_first: bool = False) -> str:
    """A prompt as HTML: each token on its colour, its raw score in the tooltip."""
    return "".join(_span(t, s, v) for t, s, v in zip(tokens, scores, normalized(scores, hide_first)))


def _page(title: str, body: str, script: str = "") -> str:
    style = _STYLE + """
.text span { white-space: pre-wrap; }
table.gen { border-collapse: collapse; font-size: 0.8em; }
table.gen td { width: 1.2em; height: 1.2em; padding: 0; border: 1px solid #eee; }
table.gen th { font-weight: normal; white-space: pre; text-align: right; padding-right: 0.4em; cursor: pointer; }
table.gen th.col { writing-mode: vertical-rl; text-align: left; cursor: default; }
tr.sel th { background: #ffd; }
"""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{colour_bar_html()}{body}"
            f"{script}</body></html>")


def to_html(results: Sequence["LMExplanation"], *, hide_first: bool = False, title: str = "attngrad language-model explanations") -> str:
    """A self-contained page with every prompt of every result."""
    sections = []
    for res in results:
        for i in range(len(res.tokens)):
            scores = res.scores(i).tolist()
            sections.append(f"<h2>{html.escape(describe(res, i))}</h2>")
            sections.append(f'<div class="text">{html_tokens(res.tokens[i], scores, hide_first)}'
                            f' <b>→ {html.escape(_visible(res.target_text[i]))}</b></div>')
    return _page(title, "\n".join(sections))


def generation_html(gen: "GenerationExplanation", *, hide_first: bool = False,
                    title: str = "attngrad: explained generation") -> str:
    """The generated text, a click-to-see map per generated token, and the whole (generated x earlier) matrix."""
    p = gen.prompt_length
    rows = []
    texts = []
    for k in range(len(gen.generated)):
        scores = gen.matrix[k, : p + k].tolist()
        values = normalized(scores, hide_first)
        cells = []
        for j in range(gen.matrix.shape[1]):
            if j < p + k:
                v = values[j]
                bg = _GREY if v is None else colours([v])[0]
                cells.append(f'<td style="background: rgb{bg}" title="{html.escape(gen.tokens[j])!s}: {scores[j]:.4g}"></td>')
            else:
                cells.append("<td></td>")
        rows.append(f'<tr data-k="{k}"><th onclick="show({k})">{html.escape(_visible(gen.generated[k]))}</th>'
                    + "".join(cells) + "</tr>")
        shown = html_tokens(gen.tokens[: p + k], scores, hide_first)
        texts.append(f'<div class="text gen-map" id="map{k}" style="display:none">{shown} '
                     f'<b>→ {html.escape(_visible(gen.generated[k]))}</b></div>')
    header = "<tr><th></th>" + "".join(f'<th class="col">{html.escape(_visible(t))}</th>'
                                        for t in gen.tokens[: gen.matrix.shape[1]]) + "</tr>"
    generated = "".join(f'<span style="cursor:pointer; text-decoration: underline dotted" onclick="show({k})">'
                        f"{html.escape(_visible(t))}</span>" for k, t in enumerate(gen.generated))
    body = (f'<h2>{html.escape(gen.method)}, {html.escape(gen.loss)} of each generated token</h2>'
            f'<div class="text"><span>{html.escape(gen.prompt)}</span><b>{generated}</b></div>'
            '<p class="meta">Click a generated token (or a row) to see its map over every earlier token.</p>'
            + "".join(texts)
            + f'<table class="gen">{header}{"".join(rows)}</table>')
    script = """<script>
function show(k) {
  document.querySelectorAll('.gen-map').forEach(e => e.style.display = 'none');
  document.querySelectorAll('tr[data-k]').forEach(e => e.classList.toggle('sel', e.dataset.k == k));
  document.getElementById('map' + k).style.display = 'block';
}
show(0);
</script>"""
    return _page(title, body, script)


def to_records(result: "LMExplanation") -> list[dict]:
    """JSON-ready records: per prompt, raw token scores and what was explained."""
    records = []
    for i in range(len(result.tokens)):
        records.append({
            "prompt": result.prompts[i],
            "method": result.method,
            "loss": result.loss,
            "target": result.target_text[i],
            "target_id": int(result.targets[i]),
            "target_probability": result.probability(i),
            "contrast": None if result.contrast_text is None else result.contrast_text[i],
            "contrast_id": None if result.contrasts is None else int(result.contrasts[i]),
            "tokens": [{"token": t, "score": s} for t, s in result.token_scores(i)],
        })
    return records


def generation_records(gen: "GenerationExplanation") -> dict:
    """JSON-ready record of an explained generation (one score list per generated token)."""
    return {
        "prompt": gen.prompt,
        "method": gen.method,
        "loss": gen.loss,
        "tokens": gen.tokens,
        "prompt_length": gen.prompt_length,
        "generated": gen.generated,
        "maps": [gen.matrix[k, : gen.prompt_length + k].tolist() for k in range(len(gen.generated))],
    }


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def save_html(path: str | Path, results: Sequence["LMExplanation"], *, hide_first: bool = False) -> Path:
    return _write(path, to_html(results, hide_first=hide_first))


def save_generation_html(path: str | Path, gen: "GenerationExplanation", *, hide_first: bool = False) -> Path:
    return _write(path, generation_html(gen, hide_first=hide_first))


def save_json(path: str | Path, results: Sequence["LMExplanation"] = (), generation: "GenerationExplanation | None" = None) -> Path:
    """Raw scores as JSON: ``{"prompts": [records...], "generation": {...} or null}``."""
    data = {"prompts": [r for res in results for r in to_records(res)],
            "generation": None if generation is None else generation_records(generation)}
    return _write(path, json.dumps(data, indent=1))
