"""Labelled image data sets for the evaluation: discovery, labels, and a DataLoader-ready Dataset.

Three layouts are understood (method.md, "Evaluation: the perturbation test"):

- a folder of ``<wnid>_<name>.jpg`` files (the ImageNet sample): the label comes from the
  WordNet id through a class table (a TSV like ``imagenet_classes.tsv``: index, wnid, name),
  or else from the name matched exactly against the model's class names;
- an ImageNet-style folder of class sub-folders (``n01440764/``, ``tench/`` or ``0/``);
- either of these with an explicit ``--labels`` TSV;
- any folder with an ``--image-labels`` file that names each image's class (a CSV or TSV of
  file name, class; ImageNet's flat validation folder with ``LOC_val_solution.csv``).

Images whose label cannot be resolved and files that cannot be decoded are reported and
skipped (and counted); the run goes on with the rest.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import AttngradError
from ..io import IMAGE_SUFFIXES, load_image
from ..models.base import ImageAdapter, ModelAdapter
from ..models.preprocess import Preprocessor

#: Class table looked for next to (or inside) the data folder when none is given.
DEFAULT_TABLE = "imagenet_classes.tsv"

_WNID_STEM = re.compile(r"^(n\d{8})(?:_(.*))?$")


def preprocessor_of(adapter: ModelAdapter) -> Preprocessor:
    """The preprocessor of an image classifier's adapter (the evaluations run on images only)."""
    if not isinstance(adapter, ImageAdapter):
        raise AttngradError(f"the evaluations run on image classifiers (an ImageAdapter), not {type(adapter).__name__}")
    return adapter.preprocessor


@dataclass(frozen=True)
class Sample:
    """One image of the data set: its path and class index."""

    path: str
    label: int


@dataclass
class DataSet:
    """The resolved samples, and what was skipped while resolving (``(path, reason)`` pairs)."""

    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    table: str | None = None
    image_labels: str | None = None
    root: str | None = None
    limit: int | None = None
    every: int | None = None


class LabelResolver:
    """Map a key (WordNet id, class name, ``<wnid>_<name>`` stem, or index) to a class index.

    Args:
        labels: the model's class names, in index order.
        table: optional TSV of ``index, wnid, name`` rows (a header row is allowed).
    """

    def __init__(self, labels: Sequence[str], table: str | Path | None = None):
        self.num_classes = len(labels)
        self.wnids: dict[str, int] = {}
        names: dict[str, set[int]] = {}
        for i, label in enumerate(labels):
            for alias in [label, *label.split(",")]:
                names.setdefault(_norm(alias), set()).add(i)
        self.table = str(table) if table is not None else None
        if table is not None:
            for index, wnid, name in _read_table(Path(table)):
                if index >= self.num_classes:
                    raise AttngradError(
                        f"{table}: class index {index} but the model has {self.num_classes} classes; "
                        "pass the class table of this model with --labels"
                    )
                self.wnids[wnid.lower()] = index
                if name:
                    names.setdefault(_norm(name), set()).add(index)
        self.names = names

    def resolve(self, key: str) -> int:
        """The class index of ``key``; raises :class:`AttngradError` saying why when there is none."""
        key = key.strip()
        if key.isdigit():
            index = int(key)
            if index < self.num_classes:
                return index
            raise AttngradError(f"class index {index} is out of range 0..{self.num_classes - 1}")
        match = _WNID_STEM.match(key)
        if match and match.group(1).lower() in self.wnids:
            return self.wnids[match.group(1).lower()]
        name = match.group(2) if match else key
        if match and not name:
            raise AttngradError(f"WordNet id {key!r} is not in the class table; pass one with --labels")
        found = self.names.get(_norm(name or ""), set())
        if len(found) == 1:
            return next(iter(found))
        if len(found) > 1:
            raise AttngradError(
                f"class name {name!r} is ambiguous (classes {sorted(found)}); name files <wnid>_<name> and pass "
                "a class table with --labels"
            )
        raise AttngradError(f"unknown class {name!r}; name files <wnid>_<name> or pass a class table with --labels")


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _read_table(path: Path) -> list[tuple[int, str, str]]:
    """Rows ``(index, wnid, name)`` of a tab-separated class table (header optional)."""
    if not path.is_file():
        raise AttngradError(f"{path}: no such class table; pass a TSV of index, wnid, name")
    rows: list[tuple[int, str, str]] = []
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or not row[0].strip():
                continue
            if not row[0].strip().isdigit():
                if n == 1:
                    continue  # header
                raise AttngradError(f"{path}, line {n}: the first column must be a class index")
            if len(row) < 2:
                raise AttngradError(f"{path}, line {n}: need index<TAB>wnid[<TAB>name]")
            rows.append((int(row[0]), row[1].strip(), row[2].strip() if len(row) > 2 else ""))
    if not rows:
        raise AttngradError(f"{path}: the class table is empty")
    return rows


def read_image_labels(path: str | Path) -> dict[str, str]:
    """``file name -> class key`` from a CSV or TSV whose rows are ``file, class[, ...]``.

    An image may be named by its path relative to the data folder, its file name, or its file name
    without the suffix. A class cell that starts with a WordNet id
    counts by that id alone, so ImageNet's ``LOC_val_solution.csv``
    (``ILSVRC2012_val_00000001,n01751748 133 ...``) works as it is; other cells (a class name or
    index) count whole. A header row is harmless (no image is called ``ImageId``).
    """
    path = Path(path)
    if not path.is_file():
        raise AttngradError(f"{path}: no such image-label file; pass a CSV or TSV of file name, class")
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of a name
        text = f.read()
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    found = {}
    for row in csv.reader(text.splitlines(), delimiter=delimiter):
        if len(row) >= 2 and row[0].strip() and row[1].split():
            first = row[1].split()[0]
            found[row[0].strip()] = first if _WNID_STEM.match(first) else row[1].strip()
    if not found:
        raise AttngradError(f"{path}: no 'file, class' rows in the image-label file")
    return found


def find_table(data: Path) -> Path | None:
    """``imagenet_classes.tsv`` inside the data folder or its parent, if there is one."""
    for folder in (data, data.parent):
        if (folder / DEFAULT_TABLE).is_file():
            return folder / DEFAULT_TABLE
    return None


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def discover(
    data: str | Path,
    labels: Sequence[str],
    table: str | Path | None = None,
    limit: int | None = None,
    image_labels: str | Path | None = None,
    every: int | None = None,
) -> DataSet:
    """Find the labelled images of ``data`` (a flat folder or class sub-folders), sorted by path.

    Args:
        data: the data folder.
        labels: the model's class names.
        table: class table TSV; default: ``imagenet_classes.tsv`` in ``data`` or its parent.
        limit: keep the first ``limit`` labelled images (sorted order; after ``every``).
        every: keep every ``every``-th labelled image (the 1st, the ``every+1``-th, ...): an evenly
            strided subset, which on a folder sorted by class keeps the classes spread.
        image_labels: a file naming each image's class (:func:`read_image_labels`); it takes
            the place of file and folder names.

    Raises:
        AttngradError: the folder is missing or holds no image; ``limit`` or ``every`` is below 1.
    """
    for name, value in (("--limit", limit), ("--every", every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise AttngradError(f"{name} must be a positive whole number, not {value}")
    root = Path(data)
    if not root.is_dir():
        raise AttngradError(f"{root}: no such data folder; pass a folder of images (--data)")
    if table is None:
        table = find_table(root)
    resolver = LabelResolver(labels, table)
    files = sorted(p for p in root.iterdir() if _is_image(p))
    entries: list[tuple[Path, str | None]] = [(p, p.stem) for p in files]
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entries += [(p, sub.name) for p in sorted(sub.iterdir()) if _is_image(p)]
    if not entries:
        raise AttngradError(
            f"{root}: no images found; pass a folder of <wnid>_<name>.jpg files or of class sub-folders"
        )
    if image_labels is not None:
        named = read_image_labels(image_labels)
        entries = [(p, next((named[k] for k in (p.relative_to(root).as_posix(), p.name, p.stem) if k in named), None))
                   for p, _ in entries]  # fmt: skip
    samples, skipped, labelled = [], [], 0
    for path, key in entries:
        if key is None:
            skipped.append((str(path), f"not named in {image_labels}"))
            continue
        try:
            label = resolver.resolve(key)
        except AttngradError as err:
            skipped.append((str(path), str(err)))
            continue
        labelled += 1
        if every is None or (labelled - 1) % every == 0:
            samples.append(Sample(str(path), label))
        if limit is not None and len(samples) >= limit:
            break
    return DataSet(samples, skipped, str(table) if table is not None else None,
                   str(image_labels) if image_labels is not None else None, str(root), limit, every)  # fmt: skip


@dataclass
class Item:
    """What the data set yields per image (``unit`` is ``None`` when the file could not be read)."""

    index: int
    unit: torch.Tensor | None
    label: int
    error: str | None = None
    guided: torch.Tensor | None = None
    region: Any = None


class ImageDataset(Dataset):
    """Decode and preprocess images in DataLoader workers, so loading overlaps the model's work.

    Each item holds the image in the model's geometry as ``[0, 1]`` pixels (``Preprocessor.to_unit``);
    with ``guide`` set, also the stitched image (``stitch(image, guide)``) and the region of the
    original in it. A file that cannot be decoded yields an item with ``error`` set.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocessor: Preprocessor,
        guide: Image.Image | None = None,
        stitch: Callable[[Image.Image, Image.Image], tuple[Image.Image, Any]] | None = None,
    ):
        if guide is not None and stitch is None:
            raise AttngradError("ImageDataset: a guide image needs a stitch function (stitch=)")
        self.samples = list(samples)
        self.preprocessor = preprocessor
        self.guide = guide
        self.stitch = stitch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        try:
            image = load_image(sample.path)
        except AttngradError as err:
            return Item(index, None, sample.label, str(err))
        unit = self.preprocessor.to_unit([image])[0]
        if self.guide is None or self.stitch is None:  # stitch is set whenever guide is (__init__)
            return Item(index, unit, sample.label)
        stitched, region = self.stitch(image, self.guide)
        return Item(index, unit, sample.label, guided=self.preprocessor.to_unit([stitched])[0], region=region)


@dataclass
class Batch:
    """A collated batch: the readable images stacked, the unreadable ones listed."""

    indices: list[int]
    unit: torch.Tensor
    labels: torch.Tensor
    failed: list[tuple[int, str]]
    guided: torch.Tensor | None = None
    regions: list[Any] | None = None


def collate(items: list[Item]) -> Batch:
    """Stack readable items; keep ``(index, message)`` for the unreadable ones."""
    readable = [(it, it.unit) for it in items if it.unit is not None]
    good = [it for it, _ in readable]
    failed = [(it.index, it.error or "unreadable") for it in items if it.unit is None]
    if not good:
        return Batch([], torch.empty(0), torch.empty(0, dtype=torch.long), failed)
    guides = [it.guided for it in good if it.guided is not None]
    if guides and len(guides) != len(good):
        raise AttngradError("collate: a batch mixes items with and without a guided image")
    guided = torch.stack(guides) if guides else None
    return Batch(
        indices=[it.index for it in good],
        unit=torch.stack([unit for _, unit in readable]),
        labels=torch.tensor([it.label for it in good], dtype=torch.long),
        failed=failed,
        guided=guided,
        regions=[it.region for it in good] if guided is not None else None,
    )
