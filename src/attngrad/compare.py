"""The comparison grid: one image, rows = classes, columns = methods (the paper's Figure 13).

Every map follows the same display rules (:mod:`attngrad.viz`: ``S / max|S|`` per map,
diverging colours on [-1, 1], one colour bar). Each column title says what red means:
support for the class (blue: opposition) for signed methods, magnitude for unsigned ones.
All classes of one image are explained in one batch (the image repeated, one target per
copy), so the grid costs one shared forward and backward pass, plus what each method adds
(a relevance propagation for T-Attr/LRP, integration steps for TAM/BI, masked passes for
TIS/ViT-CX).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure
from tqdm import tqdm

from . import viz
from .cases import CASES, asset_image, extra_multiclass_images
from .errors import AttngradError
from .explainer import Explainer
from .io import ImageLike
from .methods import METHODS
from .methods import is_signed as methods_is_signed

#: The methods of the paper's comparison (its Figure 13), baselines first; names not
#: registered (e.g. a rival not implemented) are left out.
PAPER_METHODS = ("raw_attention", "rollout", "attn_gradcam", "partial_lrp", "lrp", "tattr", "tam", "bi", "tis",
                 "vitcx", "dix", "gae", "absolute", "complete")


def paper_methods() -> list[str]:
    """:data:`PAPER_METHODS` that are registered."""
    return [m for m in PAPER_METHODS if m in METHODS]


def is_signed(method: str) -> bool:
    """Whether the method's sign means support / opposition (:func:`attngrad.methods.is_signed`)."""
    return bool(methods_is_signed(method))


def red_means(method: str) -> str:
    """What red shows in a method's map, in a few words."""
    return "red supports, blue opposes" if is_signed(method) else "red = magnitude"


def comparison_grid(
    explainer: Explainer,
    image: ImageLike,
    targets: Sequence[int | str],
    methods: Sequence[str] | None = None,
    loss: str = "logit",
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """A figure with the image and one overlay per method, one row per target class.

    Args:
        explainer: the model to explain.
        image: a path or PIL image.
        targets: classes (names, indices or ``"topK"``), one row each.
        methods: registered method names (default: all of :data:`attngrad.methods.METHODS`).
        loss: the loss whose gradient the gradient-based methods use.
        options: methods' options, ``{"ig": {"steps": 8}}`` (see :meth:`Explainer.explain_methods`).
    """
    methods = list(methods or METHODS)
    if not targets:
        raise AttngradError("give at least one target class (e.g. --targets zebra,'African elephant')")
    results = explainer.explain_methods([image] * len(targets), methods, target=list(targets), loss=loss,
                                        options=options)
    first = results[methods[0]]
    maps = [[results[m].maps[i] for m in methods] for i in range(len(targets))]
    titles = ["image", *(f"{m}\n({red_means(m)})" for m in methods)]
    return viz.grid(first.images, maps, col_titles=titles, row_titles=first.target_names,
                    signs=[is_signed(m) for m in methods])


def legend(methods: Sequence[str]) -> str:
    """HTML list: per method, its one-line description and what red means."""
    items = []
    for m in methods:
        cls = METHODS.get(m)
        doc = (getattr(cls, "__doc__", None) or "").strip().splitlines()
        text = getattr(cls, "description", "") or (doc[0] if doc else "")
        items.append(f"<li><b>{html.escape(m)}</b> ({html.escape(red_means(m))}): {html.escape(text)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def build_comparison_page(
    explainer: Explainer,
    out_dir: str | Path,
    methods: Sequence[str] | None = None,
    multiclass: str | Path | None = None,
    include_multiclass: bool = True,
) -> Path:
    """Write ``compare.html`` and one grid PNG per multi-class image into ``out_dir``.

    The shipped images are explained for both of their classes (zebra / African elephant;
    bull mastiff / tiger cat), the other images of ``multiclass`` (default
    :func:`attngrad.cases.multiclass_folder`, when present) for the model's top two classes,
    with ``methods`` (default: the registered :data:`PAPER_METHODS`); ``include_multiclass=False``
    keeps to the shipped images. Returns the path of ``compare.html``.
    """
    methods = list(methods or paper_methods())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, ImageLike, Sequence[str]]] = [
        (name, asset_image(name), classes) for name, classes in CASES.items()
    ]
    if include_multiclass:
        cases += [(p.name, p, ("top1", "top2")) for p in extra_multiclass_images(multiclass)]
    sections = []
    for filename, image, classes in tqdm(cases, desc="comparison grids", unit="image"):
        stem = Path(filename).stem
        fig = comparison_grid(explainer, image, classes, methods)
        png = viz.save_figure(fig, out / f"{stem}_compare.png")
        shown = classes if classes != ("top1", "top2") else ("its top two classes",)
        title = f"{html.escape(filename)}: {' / '.join(map(html.escape, shown))}"
        sections.append(f"<section><h2>{title}</h2><img src='{png.name}' alt='{html.escape(stem)} compared'></section>")
    page = out / "compare.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>attngrad: methods compared</title>"
        "<style>body{font-family:sans-serif;max-width:1600px;margin:auto}img{max-width:100%}</style></head><body>"
        "<h1>Methods compared on multi-class images (the paper's Figure 13 set)</h1>"
        "<p>Rows: the class explained. Columns: the methods. Each map is scaled by its own max |S|. "
        "For signed methods red supports the class and blue opposes it; unsigned methods show magnitude "
        "only (red = large). <b>lrp</b> is a pixel-level map.</p>"
        + legend(methods) + "".join(sections) + "</body></html>"
    )
    return page
