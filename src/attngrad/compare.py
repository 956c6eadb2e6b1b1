"""The comparison grid: one image, rows = classes, columns = methods (the paper's Figure 13).

Every map follows the same display rules (:mod:`attngrad.viz`: ``S / max|S|`` per map,
diverging colours on [-1, 1], one colour bar). All classes of one image are explained in
one batch (the image repeated, one target per copy), so the grid costs one forward and
one backward pass, plus one relevance propagation when T-Attr or LRP is among the methods.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
from tqdm import tqdm

from . import viz
from .demo import CASES, asset_image
from .errors import AttngradError
from .explainer import Explainer
from .io import ImageLike
from .methods import METHODS

#: The methods of the paper's comparison (its Figure 13), baselines first.
PAPER_METHODS = ("raw_attention", "rollout", "attn_gradcam", "partial_lrp", "lrp", "tattr", "gae", "absolute", "complete")


def comparison_grid(
    explainer: Explainer,
    image: ImageLike,
    targets: Sequence[int | str],
    methods: Sequence[str] | None = None,
    loss: str = "logit",
) -> Figure:
    """A figure with the image and one overlay per method, one row per target class.

    Args:
        explainer: the model to explain.
        image: a path or PIL image.
        targets: classes (names, indices or ``"topK"``), one row each.
        methods: registered method names (default: all of :data:`attngrad.methods.METHODS`).
        loss: the loss whose gradient the gradient-based methods use.
    """
    methods = list(methods or METHODS)
    if not targets:
        raise AttngradError("give at least one target class (e.g. --targets zebra,'African elephant')")
    results = explainer.explain_methods([image] * len(targets), methods, target=list(targets), loss=loss)
    first = results[methods[0]]
    maps = [[results[m].maps[i] for m in methods] for i in range(len(targets))]
    return viz.grid(first.images, maps, col_titles=["image", *methods], row_titles=first.target_names)


def build_comparison_page(explainer: Explainer, out_dir: str | Path, methods: Sequence[str] | None = None) -> Path:
    """Write ``compare.html`` and one grid PNG per demo image (``el1``, ``catdog``) into ``out_dir``.

    Each image is explained for both of its classes (zebra / African elephant;
    bull mastiff / tiger cat) with ``methods`` (default :data:`PAPER_METHODS`). Returns the path
    of ``compare.html``.
    """
    methods = list(methods or PAPER_METHODS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for filename, classes in tqdm(CASES.items(), desc="comparison grids", unit="image"):
        stem = Path(filename).stem
        fig = comparison_grid(explainer, asset_image(filename), classes, methods)
        png = viz.save_figure(fig, out / f"{stem}_compare.png")
        title = f"{html.escape(filename)}: {' / '.join(map(html.escape, classes))}"
        sections.append(f"<section><h2>{title}</h2><img src='{png.name}' alt='{html.escape(stem)} compared'></section>")
    page = out / "compare.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>attngrad: methods compared</title>"
        "<style>body{font-family:sans-serif;max-width:1600px;margin:auto}img{max-width:100%}</style></head><body>"
        "<h1>Methods compared on multi-class images</h1>"
        f"<p>Rows: the class explained. Columns: {', '.join(map(html.escape, methods))}. "
        "Each map is scaled by its own max |S|; red supports the class, blue opposes it. "
        "<b>tattr</b>, <b>partial_lrp</b> and <b>lrp</b> follow Chefer et al. (CVPR 2021); "
        "<b>lrp</b> is a pixel-level map.</p>" + "".join(sections) + "</body></html>"
    )
    return page
