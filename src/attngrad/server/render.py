"""Turning library results into what the API sends: PNG bytes and data URLs, ``.npy`` bytes,
the colour bar's stops, and what a method's colours mean (its legend)."""

from __future__ import annotations

import base64
import io
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import matplotlib
import numpy as np
from PIL import Image

from .. import viz
from ..explainer import Prediction
from ..methods import METHODS
from ..methods import is_signed as _method_is_signed

if TYPE_CHECKING:
    from ..text import TextExplanation

#: Methods whose maps keep a meaningful sign, until every method class declares ``signed``
#: (the paper's ``complete``, eq. 5, and full LRP's relevance); every other one is read as magnitude.


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def colormap_stops(n: int = 21) -> list[str]:
    """Hex colours of :data:`attngrad.viz.CMAP` at ``n`` evenly spaced values of [-1, 1] (for the colour bar)."""
    cmap = matplotlib.colormaps[viz.CMAP]
    return [matplotlib.colors.to_hex(cmap(viz.NORM(v))) for v in np.linspace(-1.0, 1.0, n)]


def prediction_json(p: Prediction) -> dict[str, Any]:
    return {"index": p.index, "label": p.label, "probability": p.probability, "logit": p.logit}


def words_json(res: TextExplanation) -> list[dict[str, Any]]:
    """The first text of ``res`` as words: raw score (summed over word pieces) and ``S / max|S|`` over its words."""
    from ..text.display import normalized_words

    words = res.words(0)
    return [{**asdict(w), "normalized": v} for w, v in zip(words, normalized_words(words))]


def is_signed(name: str) -> bool:
    """Whether method ``name``'s sign means support/oppose (:func:`attngrad.methods.is_signed`; unknown: no)."""
    return bool(_method_is_signed(name))


def legend(name: str) -> str:
    """One sentence saying what red (and blue) mean in method ``name``'s maps."""
    if is_signed(name):
        return "red supports the class, blue opposes it"
    return "red is magnitude (how much, not for or against); this method has no sign"


def method_details(methods: Iterable[str] = METHODS, signed: Callable[[str], bool] = is_signed,
                   legend: Callable[[str], str] = legend) -> list[dict[str, Any]]:
    """Every method (default: the image methods) with its sign and legend (for the ``info`` routes)."""
    return [{"name": n, "signed": signed(n), "red": "support" if signed(n) else "magnitude", "legend": legend(n)}
            for n in methods]


def tab_info(*, missing: str | None, model: str, loaded: bool, methods: Sequence[str], signed: Callable[[str], bool],
             legend: Callable[[str], str]) -> dict[str, Any]:
    """The fields a model tab's ``info`` route shares (``/api/lm/info``, ``/api/vlm/info``: :class:`~.schemas.TabInfo`)."""
    from ..losses import LOSSES

    return {"available": missing is None, "reason": missing, "model": model, "loaded": loaded,
            "methods": list(methods), "method_details": method_details(methods, signed, legend), "losses": list(LOSSES)}
