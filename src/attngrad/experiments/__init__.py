"""The paper's experiments (Cui, Fan & Chen; method.md "Experiments the method enables").

* :mod:`.guidance` — external attention guidance: stitch a guide image beside the original (experiment 3).
* :mod:`.detail` — detail interpretation: t1 against its runners-up with ``normdiff`` (experiment 4).
* :mod:`.transfer` — attention transfer: learnable attention maps, weights frozen (experiment 2).
* :mod:`.rewrite` — class rewriting in 8-bit pixel space within an L-inf budget (experiment 5).
* :mod:`.report` — every experiment on one model as ``report.html``.
"""

from .detail import DetailResult, detail_interpretation
from .guidance import GuidedExplanation, Region, crop_region, explain_guided, resolve_guide, stitch
from .report import build_report
from .rewrite import RewriteResult, psnr, rewrite, rewrite_batch, ssim
from .transfer import TransferResult, attention_transfer

__all__ = [
    "DetailResult",
    "GuidedExplanation",
    "Region",
    "RewriteResult",
    "TransferResult",
    "attention_transfer",
    "build_report",
    "crop_region",
    "detail_interpretation",
    "explain_guided",
    "psnr",
    "resolve_guide",
    "rewrite",
    "rewrite_batch",
    "ssim",
    "stitch",
]
