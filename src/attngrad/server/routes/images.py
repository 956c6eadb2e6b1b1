"""Image routes: the shipped samples, ``/api/predict``, ``/api/explain`` and the map downloads.

Images come as uploads, shipped sample ids, or the content hash (``image_id``) of an earlier
upload; results are cached under a hash of the image and every parameter (``result_id``).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse, Response

from .. import work
from ..cache import key_of
from ..problems import http_error
from ..render import data_url, is_signed, legend, npy
from ..schemas import ERRORS, ExplainResponse, PredictResponse, SampleList, binary
from ..service import HEX64, ExplorerDep

router = APIRouter(prefix="/api", tags=["images"])

#: The three ways to give an image (exactly one per request); the job routes take them too.
ImageFile = Annotated[UploadFile | None, File(description="an image file (JPEG, PNG, ...)")]
SampleId = Annotated[str | None, Form(description="a sample id from /api/samples")]
ImageId = Annotated[str | None, Form(description="the image_id of an earlier upload")]


@router.get("/samples", response_model=SampleList)
async def samples(ex: ExplorerDep) -> dict:
    """The shipped sample images, by id."""
    return {
        "samples": [
            {"id": sid, "title": s["title"], "url": f"/api/samples/{sid}/image"} for sid, s in ex.samples.items()
        ]
    }


@router.get(
    "/samples/{sample_id}/image",
    response_class=FileResponse,
    responses={**binary("image/jpeg", "the sample's image file (JPEG or PNG)"), 404: ERRORS[404]},
)
async def sample_image(ex: ExplorerDep, sample_id: str) -> FileResponse:
    """The image file of a shipped sample (ids only; no paths)."""
    if sample_id not in ex.samples:
        raise http_error(404, f"unknown sample {sample_id!r}", valid=list(ex.samples))
    return FileResponse(ex.samples[sample_id]["path"])


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
async def predict(
    ex: ExplorerDep,
    file: ImageFile = None,
    sample: SampleId = None,
    image_id: ImageId = None,
    k: int = Form(5, ge=1, le=100),
) -> dict:
    """Top-k predictions; the returned ``image_id`` names the image in later calls."""
    digest, image = await ex.image(file, sample, image_id)
    predictions = await ex.cached(key_of("predict", digest, k), work.predict, ex.explainer, image, k)
    return {"image_id": digest, "predictions": predictions}


@router.post("/explain", response_model=ExplainResponse, responses=ERRORS)
async def explain(
    ex: ExplorerDep,
    file: ImageFile = None,
    sample: SampleId = None,
    image_id: ImageId = None,
    methods: str | None = Form(None, description="comma-separated method names (default: gae,complete)"),
    target: str | None = Form(None, description="class name, index or topK (default: top1)"),
    contrast: str | None = Form(None, description="second class for two-class losses (detail interpretation)"),
    loss: str | None = Form(None, description="logit, normdiff, diff, ratio (default: logit; normdiff with a contrast)"),
    start_layer: int = Form(0, description="first layer of the rollout product"),
    guide_sample: str | None = Form(None, description="external guidance: a sample id stitched beside the image"),
    guide_image_id: str | None = Form(None, description="external guidance: an earlier upload's image_id"),
) -> dict:
    """Maps of one image for one target, several methods from one forward + backward pass.

    Each method comes with the raw map (``map``, gh x gw numbers, sign kept), its
    ``peak`` max|S|, whether its sign means support/oppose (``signed``, ``legend``), the
    overlay as a PNG data URL (display rules of :mod:`attngrad.viz`) and download URLs for
    the PNG and the raw map (.npy). With a guide (paper, external guidance) the image is
    explained stitched beside the guide and the map of the image's own region is returned
    (the stitch starts from the stored picture, at most 2 MP).
    """
    names = ex.check_methods(methods)
    target = ex.check_class(target, "target")
    contrast = ex.check_class(contrast, "contrast")
    loss_name = ex.check_loss(loss, contrast)
    start_layer = ex.check_start_layer(start_layer)
    digest, image = await ex.image(file, sample, image_id)
    guide_digest, guide = None, None
    if guide_sample or guide_image_id:
        guide_digest, guide = await ex.image(None, guide_sample, guide_image_id, prefix="guide_")
    key = key_of("explain", digest, names, target, contrast, loss_name, start_layer, guide_digest)
    result = await ex.cached(
        key, work.explain, ex.explainer, image, names, target=target, contrast=contrast, loss=loss_name,
        start_layer=start_layer, guide=guide, top_k=ex.settings.top_k,
    )
    return {
        "result_id": key,
        "image_id": digest,
        "guide_id": guide_digest,
        **{k: v for k, v in result.items() if k != "methods"},
        "methods": [_method_json(key, m) for m in result["methods"]],
    }


def _method_json(key: str, m: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": m["name"],
        "map": m["raw"].tolist(),
        "peak": float(np.abs(m["raw"]).max()),
        "signed": is_signed(m["name"]),
        "legend": legend(m["name"]),
        "overlay": data_url(m["png"]),
        "png_url": f"/api/results/{key}/{m['name']}.png",
        "npy_url": f"/api/results/{key}/{m['name']}.npy",
    }


@router.get(
    "/results/{result_id}/{method}.{fmt}",
    response_class=Response,
    responses={
        200: {
            "description": "the overlay (.png) or the raw map as a NumPy file (.npy)",
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        404: ERRORS[404],
    },
)
async def result_file(ex: ExplorerDep, result_id: str, method: str, fmt: str) -> Response:
    """Download one method's overlay (``.png``) or raw map (``.npy``) from a cached explain result."""
    if fmt not in ("png", "npy"):
        raise http_error(404, f"unknown format {fmt!r}; use .png or .npy", valid=["png", "npy"])
    result = ex.results.get(result_id) if HEX64.match(result_id) else None
    if result is None or "methods" not in result or "task" in result:
        raise http_error(404, "unknown or expired result_id; explain again")
    entry = next((m for m in result["methods"] if m["name"] == method), None)
    if entry is None:
        raise http_error(404, f"method {method!r} is not in this result", valid=[m["name"] for m in result["methods"]])
    filename = f"{result['target']['label'].replace(' ', '_')}_{method}.{fmt}"
    return Response(
        entry["png"] if fmt == "png" else npy(entry["raw"]),
        media_type="image/png" if fmt == "png" else "application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
