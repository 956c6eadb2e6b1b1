"""``attngrad serve``: an HTTP API and a one-page UI for exploring explanations (needs the ``server`` extra)."""

from .app import create_app
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
