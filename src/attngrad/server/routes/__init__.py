"""The API's routes, one :class:`fastapi.APIRouter` per group: the model (health, info,
classes), images (samples, predict, explain, downloads), text, the language model, the vision-language model, and jobs
(rewriting, transfer)."""

from .images import router as images
from .jobs import router as jobs
from .lm import router as lm
from .model import router as model
from .text import router as text
from .vlm import router as vlm

ROUTERS = (model, images, text, lm, vlm, jobs)

__all__ = ["ROUTERS", "images", "jobs", "lm", "model", "text", "vlm"]
