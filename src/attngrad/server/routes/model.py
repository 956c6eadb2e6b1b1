"""``/api/health``, ``/api/info``, ``/api/classes``: the model, its methods and the server's state."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from ...losses import LOSSES
from ...methods import METHODS
from ..render import colormap_stops, method_details
from ..schemas import ClassList, Health, Info
from ..service import ExplorerDep
from ..settings import DEFAULT_METHODS

router = APIRouter(prefix="/api", tags=["model"])


@router.get("/health", response_model=Health)
async def health(ex: ExplorerDep) -> dict:
    """Liveness, queue and cache statistics."""
    return {"status": "ok", "queue": ex.queue.stats(), "results": ex.results.stats(), "images": ex.images.stats()}


@router.get("/info", response_model=Info)
async def info(ex: ExplorerDep) -> dict:
    """Model, methods (with what their colours mean), losses, display colours and limits."""
    return {
        "model": ex.model_name,
        "num_classes": len(ex.explainer.labels),
        "methods": list(METHODS),
        "method_details": method_details(),
        "default_methods": list(DEFAULT_METHODS),
        "losses": list(LOSSES),
        "colormap": colormap_stops(),
        "limits": asdict(ex.settings),
    }


@router.get("/classes", response_model=ClassList)
async def classes(ex: ExplorerDep, search: str | None = None) -> dict:
    """The model's classes (index, label), optionally those containing ``search``."""
    needle = (search or "").lower()
    return {
        "classes": [{"index": i, "label": lab} for i, lab in enumerate(ex.explainer.labels) if needle in lab.lower()]
    }
