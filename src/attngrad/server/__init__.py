"""``attngrad serve``: an HTTP API and a one-page UI for exploring explanations (needs the ``server`` extra)."""

from .app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
