"""Resolving targets: a class index, a class name, ``"top1"``..``"topk"``, or one per image."""

from __future__ import annotations

import difflib
import re
from typing import Sequence, Union

import torch

from .errors import AttngradError

TargetSpec = Union[None, int, str, Sequence[Union[int, str]], torch.Tensor]

_TOPK = re.compile(r"^top-?(\d+)$", re.IGNORECASE)


def _aliases(labels: Sequence[str], *, spaced: bool = True) -> dict[str, int]:
    """Lower-cased names and their comma-separated synonyms ("tench, Tinca tinca") -> index; with ``spaced``, a
    name with underscores ("LABEL_2", "great_white_shark") also under its spaced form, which :func:`class_index`
    looks up."""
    table: dict[str, int] = {}
    for i, label in enumerate(labels):
        for alias in [label, *label.split(",")]:
            table.setdefault(alias.strip().lower(), i)
            if spaced:
                table.setdefault(alias.strip().lower().replace("_", " "), i)
    return table


def class_index(name: int | str, labels: Sequence[str]) -> int:
    """Index of one class given by index (int or digit string) or name (case-insensitive)."""
    if isinstance(name, str) and name.strip().lstrip("-").isdigit():
        name = int(name)
    if isinstance(name, int):
        if not 0 <= name < len(labels):
            raise AttngradError(f"class index {name} is out of range; this model has classes 0..{len(labels) - 1}", field="target", choices=labels)
        return name
    table = _aliases(labels)
    key = name.strip().lower().replace("_", " ")
    if key in table:
        return table[key]
    close = difflib.get_close_matches(name.strip().lower(), list(_aliases(labels, spaced=False)), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; list them with `attngrad classes`"
    raise AttngradError(f"unknown class {name!r}{hint}", field="target", choices=labels)


def resolve_targets(spec: TargetSpec, logits: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
    """Turn a target spec into a long tensor (B,) of class indices.

    ``None`` means ``"top1"`` (the prediction); ``"topk"`` the k-th highest logit of each
    image; a list or tensor gives one target per image.
    """
    batch = logits.shape[0]
    if spec is None:
        spec = "top1"
    if isinstance(spec, torch.Tensor):
        spec = spec.tolist() if spec.ndim else int(spec)
    if isinstance(spec, (list, tuple)):
        if len(spec) != batch:
            raise AttngradError(f"{len(spec)} targets given for {batch} images; give one per image or one for all", field="target")
        columns = [resolve_targets(s, logits[i : i + 1], labels) for i, s in enumerate(spec)]
        return torch.cat(columns)
    topk = _TOPK.match(spec.strip()) if isinstance(spec, str) else None
    if topk:
        k = int(topk.group(1))
        if not 1 <= k <= logits.shape[1]:
            raise AttngradError(f"{spec!r}: k must be between 1 and {logits.shape[1]}", field="target", choices=labels)
        return logits.topk(k, dim=1).indices[:, k - 1].detach()
    if not isinstance(spec, (int, str)):
        raise AttngradError(
            f"target {spec!r} is not a class index, a class name, 'topK' or a list of those", field="target"
        )
    return torch.full((batch,), class_index(spec, labels), dtype=torch.long, device=logits.device)
