"""Which adapter wraps which model: a registry by model type, class, or predicate.

A model family is one adapter file plus one registration line::

    register_adapter("my-family", MyAdapter, model_types=("my_model",))

:func:`find_adapter` tries, in order: the Hugging Face ``config.model_type``, the
model's classes (most derived first; by class or ``"module.ClassName"``), then the
predicates, newest registration first. ``scheme`` names a loader prefix for
:func:`attngrad.models.load_model` (``"timm:vit_tiny_patch16_224"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import AttngradError
from .base import ModelAdapter


@dataclass(frozen=True)
class AdapterEntry:
    """One registered family: how to recognise its models and build (or load) its adapter."""

    name: str
    adapter: Callable[[nn.Module], ModelAdapter]
    model_types: tuple[str, ...] = ()
    classes: tuple[type | str, ...] = ()
    match: Callable[[nn.Module], bool] | None = None
    scheme: str | None = None
    loader: Callable[..., ModelAdapter] | None = None


_ENTRIES: list[AdapterEntry] = []


def register_adapter(
    name: str,
    adapter: Callable[[nn.Module], ModelAdapter],
    *,
    model_types: tuple[str, ...] = (),
    classes: tuple[type | str, ...] = (),
    match: Callable[[nn.Module], bool] | None = None,
    scheme: str | None = None,
    loader: Callable[..., ModelAdapter] | None = None,
) -> AdapterEntry:
    """Register a model family (a later registration under the same ``name`` replaces it).

    Args:
        name: the family's name (shown in errors).
        adapter: builds the adapter from a model (usually the adapter class).
        model_types: Hugging Face ``config.model_type`` values it handles.
        classes: model classes (or ``"module.ClassName"`` strings, to avoid imports) it handles.
        match: a predicate for models the other keys cannot name.
        scheme, loader: ``load_model(f"{scheme}:{name}", device=..., checkpoint=...)`` calls
            ``loader(name, checkpoint=..., device=...)``.
    """
    entry = AdapterEntry(name, adapter, tuple(model_types), tuple(classes), match, scheme, loader)
    _ENTRIES[:] = [e for e in _ENTRIES if e.name != name]
    _ENTRIES.append(entry)
    return entry


def registered_adapters() -> list[AdapterEntry]:
    return list(_ENTRIES)


def _class_keys(cls: type) -> set:
    return {cls, f"{cls.__module__}.{cls.__qualname__}"}


def find_adapter(model: nn.Module) -> AdapterEntry:
    """The registered family of ``model`` (see the module docstring for the order)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for entry in reversed(_ENTRIES):
        if model_type is not None and model_type in entry.model_types:
            return entry
    for cls in type(model).__mro__:
        keys = _class_keys(cls)
        for entry in reversed(_ENTRIES):
            if any(c in keys for c in entry.classes):
                return entry
    for entry in reversed(_ENTRIES):
        if entry.match is not None and entry.match(model):
            return entry
    names = ", ".join(e.name for e in _ENTRIES)
    raise AttngradError(
        f"no adapter for {type(model).__name__}; supported families: {names} "
        "(add one: docs/adding-a-model-family.md)"
    )


def find_scheme(scheme: str) -> AdapterEntry | None:
    """The family that loads names of the form ``"{scheme}:NAME"``, if any."""
    for entry in reversed(_ENTRIES):
        if entry.scheme == scheme and entry.loader is not None:
            return entry
    return None
