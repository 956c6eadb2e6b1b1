"""Views of vision–language explanations: overlays on the image, coloured prompt tokens, JSON.

The patch map is drawn as the images' maps are (``S / max|S|`` for signed methods, min-max for
magnitudes; :mod:`attngrad.viz`); the prompt's text tokens are coloured as the language models'
(:mod:`attngrad.lm.display`), image tokens left out (they are the map).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from .. import viz
from ..lm.display import colour_bar_html, normalized

if TYPE_CHECKING:
    from .explainer import VLMExplanation


def figure(image: Image.Image, results: Sequence["VLMExplanation"], index: int = 0, titles: Sequence[str] | None = None):
    """The image, then one overlay per result (item ``index`` of each)."""
    titles = list(titles) if titles is not None else [f"{r.method} ({r.reading})\n→ {r.target_text[index]!r}" for r in results]
    return viz.grid([image], [[r.maps[index] for r in results]], col_titles=["image", *titles],
                    signs=[r.signed for r in results])


def _tokens_html(res: "VLMExplanation", index: int) -> str:
    pairs = [(t, s) for t, s in res.token_scores(index) if t != "<image>"]
    values = normalized([s for _, s in pairs])
    spans = []
    for (token, score), value in zip(pairs, values):
        bg = viz.rgb_colours([value or 0.0])[0]
        fg = viz.ink(bg)
        spans.append(f'<span title="{score:+.4g}" style="background:rgb{bg};color:rgb{fg}">'
                     f"{html.escape(token.replace(chr(10), ' '))}</span>")
    return "".join(spans)


def generation_figure(image: Image.Image, res: "VLMExplanation"):
    """One row per generated token (:meth:`~attngrad.vlm.VLMExplainer.explain_generation`): the image and its map."""
    n = len(res.target_text)
    return viz.grid([image] * n, [[res.maps[k]] for k in range(n)], row_titles=[repr(t) for t in res.target_text],
                    signs=[res.signed])


def to_html(image: Image.Image, results: Sequence["VLMExplanation"], prompt: str, index: int = 0, *, fig=None) -> str:
    """A page: the figure of :func:`figure` (``fig`` when already drawn), then per result the explained token and
    the prompt tokens' scores."""
    rows = "".join(f"<p><b>{html.escape(r.method)} ({html.escape(r.reading)})</b> → {html.escape(repr(r.target_text[index]))}: "
                   f"<span class='text'>{_tokens_html(r, index)}</span></p>" for r in results)
    return _page(prompt, figure(image, results, index) if fig is None else fig, rows)


def generation_html(image: Image.Image, res: "VLMExplanation", prompt: str, *, fig=None) -> str:
    """A page for a generated answer: :func:`generation_figure` (``fig`` when already drawn), then per generated
    token the scores of the prompt and of the tokens generated before it."""
    rows = "".join(f"<p><b>{k + 1}. {html.escape(repr(token))}</b> ({html.escape(res.method)}, {html.escape(res.reading)}): "
                   f"<span class='text'>{_tokens_html(res, k)}</span></p>" for k, token in enumerate(res.target_text))
    return _page(prompt, generation_figure(image, res) if fig is None else fig, rows)


def _page(prompt: str, fig, rows: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    return (f"<!doctype html><meta charset='utf-8'><title>attngrad: {html.escape(prompt)}</title>"
            f"<style>{viz.HTML_STYLE}</style><h1>{html.escape(prompt)}</h1>"
            f"<img src='data:image/png;base64,{png}' style='max-width:100%'>{colour_bar_html()}{rows}")


def records(res: "VLMExplanation") -> list[dict]:
    """One JSON record per item: the explained token, the patch map, the text tokens' scores."""
    out = []
    for i in range(res.maps.shape[0]):
        out.append({"method": res.method, "reading": res.reading, "loss": res.loss, "target": res.target_text[i],
                    "contrast": None if res.contrasts is None else int(res.contrasts[i]),
                    "patch_map": res.maps[i].tolist(),
                    "tokens": [{"token": t, "score": s} for t, s in res.token_scores(i) if t != "<image>"]})
    return out


def save_json(path: str | Path, results: Sequence["VLMExplanation"], extra: dict | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps({**(extra or {}), "results": [r for res in results for r in records(res)]}, indent=1))
    return path
