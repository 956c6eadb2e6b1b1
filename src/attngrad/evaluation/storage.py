"""A results folder on disk (one job: storage and the checks that make ``--resume`` safe).

A run folder holds

- ``run.json``: the run's settings (:class:`RunRecord`); written last when a run starts, so
  a folder without it is not a run;
- ``images.tsv``: one row per image, ``path, label, size, blake2b`` - the path relative to the
  data folder, the class tested, and the file's size and content hash, computed once when the
  run starts. ``--resume`` recomputes them and refuses when an image was replaced, added,
  removed or relabelled, naming the images;
- ``shards/batch-NNNNNN.npz``: the per-image raw results of one batch, written atomically as
  soon as the batch is done; a shard that cannot be read on ``--resume`` is named and
  recomputed;
- ``per_image.npz``: every shard merged (written by the summary). Reading a folder takes the
  shards when present and ``per_image.npz`` for the batches without one, so a finished run
  can be kept (and resumed, with a larger ``--limit``) without its shards.

Paths are stored relative to the run folder (data, class table, guide) or to the data folder
(images), never as this machine's absolute paths.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

from ..errors import AttngradError
from .data import Sample
from .resumable import new_paths, stored_settings

SHARDS = "shards"
RUN_FILE = "run.json"
IMAGES_FILE = "images.tsv"
PER_IMAGE = "per_image.npz"
#: Settings that must match for ``--resume`` to continue a run.
RESUME_KEYS = (
    "data", "methods", "explain", "guide", "guide_digest", "guide_region", "limit", "every", "batch_size", "eval_batch_size",
    "model", "table", "image_labels", "insertion_deletion", "method_options",
)  # fmt: skip

PROTOCOL = (
    "Chefer et al. 2021: rank pixels by the bilinearly upsampled map; set floor(f*H*W) pixels to 0 in [0,1] "
    "space for f = 0.1..0.9; top-1 == explained class; AUC = np.trapezoid(curve, dx=0.1) * 100"
)
INSERTION_PROTOCOL = (
    "; insertion / deletion (Petsiuk et al. 2018): class probability at 0..100 % with the highest-scored "
    "pixels pasted into the blurred image (Gaussian 11 x 11, sigma 5, reflected borders) or set to 0"
)
#: ``guide_region`` -> the guided protocol in words.
GUIDED_PROTOCOLS = {
    "whole": (
        "the paper's (Cui, Fan & Chen, section 4.6.1): each image is stitched beside the guide (left-right, as "
        "`explain --guide`); the explained class is the original image's label (--explain predicted: the top-1 "
        "on the stitched image); the map covers the whole stitched input; the pixels of the whole stitched input "
        "are ranked and removed; a hit is the stitched image's top-1 still being the explained class; accuracy "
        "at 0 % is that of the stitched images"
    ),
    "original": (
        "cropped (--guide-region original): the class is explained on the image stitched beside the guide, the "
        "map is cropped to the original's half and upsampled onto the original image alone, which is the image "
        "perturbed and classified (--explain predicted: the original's top-1); accuracy at 0 % is that of the "
        "original images"
    ),
}


@dataclass
class RunRecord:
    """What a run computes; stored in ``run.json`` and, under ``settings``, in ``results.json``."""

    data: str
    methods: list[str]
    #: ``{method: {option: value}}`` given with ``--method-option`` (a changed option is another run)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    explain: str = "label"
    guide: str | None = None
    #: size and BLAKE2b of the guide image's file: its content is part of the run's identity
    guide_digest: str | None = None
    guide_region: str | None = None
    limit: int | None = None
    every: int | None = None
    batch_size: int = 16
    eval_batch_size: int = 64
    model: str = ""
    table: str | None = None
    image_labels: str | None = None
    insertion_deletion: bool = False
    device: str = "cpu"
    world_size: int = 1
    num_samples: int = 0
    samples_digest: str = ""
    protocol: str = PROTOCOL
    guided_protocol: str | None = None
    skipped_unknown: list[tuple[str, str]] = field(default_factory=list)
    skipped_guide_class: list[str] = field(default_factory=list)


def json_safe(value: object) -> object:
    """``value`` with every non-finite float (an undefined metric) as ``None``: strict JSON has no NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def relative(path: str | os.PathLike | None, base: str | os.PathLike) -> str | None:
    """``path`` relative to the folder ``base`` (POSIX separators), so no machine path is stored."""
    if path is None:
        return None
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


# ----------------------------------------------------------------------------- images and their content


@dataclass(frozen=True)
class ImageRecord:
    """One image of a run: path relative to the data folder, class, size in bytes, content hash."""

    path: str
    label: int
    size: int
    digest: str


def guide_digest(path: str | os.PathLike | None) -> str | None:
    """``size:blake2b`` of the guide image's file (``None`` without a guide)."""
    if path is None:
        return None
    size, digest = _content(path)
    return f"{size}:{digest}"


def _content(path: str | os.PathLike) -> tuple[int, str]:
    """``(size, blake2b-128 of the bytes)``; ``(-1, "")`` for a file that cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return -1, ""
    return len(data), hashlib.blake2b(data, digest_size=16).hexdigest()


def image_records(samples: Sequence[Sample], root: str | os.PathLike, threads: int | None = None) -> list[ImageRecord]:
    """The :class:`ImageRecord` of every sample, hashed in ``threads`` threads (default: one per CPU, at
    most 8; hashlib releases the GIL). The 1000 sample images (29 MB) take about 0.3 s on one thread."""
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        contents = list(pool.map(_content, [s.path for s in samples], chunksize=64))
    return [
        ImageRecord(relative(s.path, root) or "", s.label, size, digest) for s, (size, digest) in zip(samples, contents)
    ]


def records_digest(records: Sequence[ImageRecord]) -> str:
    """SHA-256 of the ordered records (paths, labels, sizes and content hashes)."""
    return hashlib.sha256(_records_text(records).encode()).hexdigest()


def _records_text(records: Sequence[ImageRecord]) -> str:
    return "path\tlabel\tsize\tblake2b\n" + "".join(f"{r.path}\t{r.label}\t{r.size}\t{r.digest}\n" for r in records)


def read_records(out: Path) -> list[ImageRecord] | None:
    """The stored ``images.tsv`` of a run folder (None when there is none)."""
    path = out / IMAGES_FILE
    if not path.is_file():
        return None
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    try:
        return [ImageRecord(p, int(label), int(size), digest) for p, label, size, digest in rows]
    except ValueError:
        raise AttngradError(f"{path} is damaged; choose another --out") from None


def _atomic_write(path: Path, content: str | bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``path`` whole or not at all: ``content`` (text as UTF-8, bytes, or a function writing
    into the open binary file) goes to ``.<name>.partial`` beside it, flushed to disk, then
    :func:`os.replace` puts it in place. A failure leaves the old file as it was and no partial file.

    Every file of a results folder is written through here (shards, ``per_image.npz``, ``run.json``,
    ``images.tsv``, the summaries and plots).
    """
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _describe_changes(stored: Sequence[ImageRecord], now: Sequence[ImageRecord]) -> str:
    """What differs between two image lists, in words, naming up to three images per kind."""
    old, new = {r.path: r for r in stored}, {r.path: r for r in now}
    kinds = {
        "replaced (other content under the same name)": [
            p for p in old if p in new and (old[p].size, old[p].digest) != (new[p].size, new[p].digest)
        ],
        "relabelled": [p for p in old if p in new and old[p].label != new[p].label],
        "added": [p for p in new if p not in old],
        "removed": [p for p in old if p not in new],
    }
    parts = [
        f"{len(paths)} {kind}: " + ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        for kind, paths in kinds.items()
        if paths
    ]
    return "; ".join(parts) or "their order differs"


# ----------------------------------------------------------------------------- the run folder


def prepare_folder(out: Path, record: RunRecord, resume: bool, records: Sequence[ImageRecord]) -> list[Path]:
    """Create ``out`` with ``images.tsv`` and ``run.json``, or check that ``--resume`` may continue it.

    On resume the settings and the images (content, labels) must match the stored run's. The
    limit may grow when the stored images are the first of the new ones: whole batches stay
    valid; a last, partly filled batch is deleted and redone. Returns the paths this call created
    (none for a resumed run); a run that fails before its first result removes them
    (:func:`~.resumable.remove_created`).
    """
    run_file = out / RUN_FILE
    stored = stored_settings(run_file, resume=resume, start_on_resume=True)
    if stored is None:
        created = new_paths(out, out / SHARDS, out / IMAGES_FILE, run_file)
        (out / SHARDS).mkdir(parents=True, exist_ok=True)
        _atomic_write(out / IMAGES_FILE, _records_text(records))
        _atomic_write(run_file, json.dumps(asdict(record), indent=2))
        return created
    stored_records = read_records(out)
    if stored_records is None:
        raise AttngradError(
            f"cannot resume {out}: it has no {IMAGES_FILE} (a run of an older attngrad), so changed images could "
            "not be detected; choose another --out"
        )
    defaults = asdict(RunRecord(data="", methods=[]))  # keys that older runs did not store
    defaults["guide_region"] = "original" if stored.get("guide") else None  # older guided runs cropped
    current = json.loads(json.dumps(asdict(record)))
    defaults["guide_digest"] = current["guide_digest"]  # runs of an older attngrad did not store it: not checkable
    diff = [k for k in RESUME_KEYS if stored.get(k, defaults[k]) != current[k]]
    n = len(stored_records)
    if diff == ["limit"] and 0 < n <= len(records) and list(records[:n]) == stored_records:
        if n % record.batch_size and n < len(records):
            shard_path(out, n // record.batch_size).unlink(missing_ok=True)
            _drop_from_per_image(out, n // record.batch_size * record.batch_size)
        _atomic_write(out / IMAGES_FILE, _records_text(records))
        _atomic_write(run_file, json.dumps(asdict(record), indent=2))
    elif "guide_digest" in diff and stored.get("guide") == current["guide"]:
        raise AttngradError(f"cannot resume {out}: the guide image {record.guide} changed since the run began; "
                            "restore it or choose another --out")
    elif diff:
        raise AttngradError(
            f"cannot resume {out}: settings differ ({', '.join(diff)}); use the run's settings or another --out"
            + (" (--limit can only grow, keeping the stored images first)" if diff == ["limit"] else "")
        )
    elif list(records) != stored_records:
        raise AttngradError(
            f"cannot resume {out}: the images differ from the stored run's ({_describe_changes(stored_records, records)})"
            "; restore them or choose another --out"
        )
    return []


# ----------------------------------------------------------------------------- shards


def shard_path(out: Path, j: int) -> Path:
    return out / SHARDS / f"batch-{j:06d}.npz"


#: the array of a shard that holds the SHA-256 of all its other arrays (checked on resume)
DIGEST_KEY = "__digest__"


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order (``DIGEST_KEY`` left out)."""
    h = hashlib.sha256()
    for key in sorted(k for k in arrays if k != DIGEST_KEY):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a partial file is renamed only once complete and flushed to disk), with the
    digest of its content stored inside it (:func:`check_shard`)."""
    path.parent.mkdir(parents=True, exist_ok=True)  # shards/ may have been deleted (per_image.npz kept)
    stored = {**arrays, DIGEST_KEY: np.array(arrays_digest(arrays))}
    _atomic_write(path, lambda f: np.savez(f, **stored))  # type: ignore[arg-type]  # numpy's stubs: a ** key could be allow_pickle


def check_shard(path: Path, *, require_digest: bool = True) -> dict[str, np.ndarray]:
    """A shard's arrays, read whole and checked against the digest written with them; else :class:`AttngradError`.

    ``require_digest=False`` accepts a shard of an older attngrad, written without one."""
    arrays = read_npz(path)
    digest = arrays.pop(DIGEST_KEY, None)
    if (digest is None and require_digest) or (digest is not None and str(digest) != arrays_digest(arrays)):
        raise AttngradError(f"{path}: its content does not match its digest (edited or damaged)")
    return arrays


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read whole (so a truncated or corrupt file fails here)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise AttngradError(f"{path} is unreadable ({type(err).__name__}: {err})") from None


def _stored_images(path: Path) -> set[int]:
    """The image indices (evaluated and failed) of ``per_image.npz``, reading those two arrays only."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {int(i) for key in ("index", "failed_index") if key in f.files for i in f[key]}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise AttngradError(f"{path} is unreadable ({type(err).__name__}: {err})") from None


def done_batches(out: Path, batches: Sequence[Sequence[int]], candidates: Sequence[int], *, verify: bool = True) -> set[int]:
    """Which of the batches ``candidates`` are done: a shard, or all images in ``per_image.npz``.

    With ``verify`` (a run starting or resuming) each existing shard is read whole; one that cannot
    be read (truncated, corrupt) is reported on stderr, deleted and so recomputed. Without it the
    shards' names are trusted (they are written atomically: a named shard is complete), so nothing
    but ``per_image.npz``'s index arrays is read.
    """
    covered = _stored_images(out / PER_IMAGE) if (out / PER_IMAGE).is_file() else set()
    done = set()
    for j in candidates:
        path = shard_path(out, j)
        if path.exists():
            if not verify:
                done.add(j)
                continue
            try:
                check_shard(path)
                done.add(j)
                continue
            except AttngradError as err:
                print(f"attngrad: warning: {err}; recomputing shard {path.name}", file=sys.stderr)
                path.unlink()
        if covered and all(i in covered for i in batches[j]):
            done.add(j)
    return done


def _drop_from_per_image(out: Path, first: int) -> None:
    """Remove images ``first`` and later from ``per_image.npz`` (their batch is being redone)."""
    path = out / PER_IMAGE
    if not path.is_file():
        return
    kept = read_npz(path)
    for prefix, key in (("", "index"), ("failed_", "failed_index")):
        if key in kept:
            keep = kept[key] < first
            for k in [k for k in kept if k.startswith(prefix) and (prefix or not k.startswith("failed_"))]:
                kept[k] = kept[k][keep]
    _atomic_write(path, lambda f: np.savez_compressed(f, **kept))  # type: ignore[arg-type]  # numpy's stubs: a ** key could be allow_pickle


def load_results(out: str | Path) -> dict[str, np.ndarray]:
    """Every image's raw results of a folder, sorted by image index: the shards, and
    ``per_image.npz`` for the images without a shard.

    Raises:
        AttngradError: there are no results, or a shard is unreadable (named; ``--resume`` recomputes it).
    """
    out = Path(out)
    parts = []
    if (out / PER_IMAGE).is_file():
        parts.append(read_npz(out / PER_IMAGE))
    for f in sorted((out / SHARDS).glob("batch-*.npz")):
        try:
            parts.append(check_shard(f, require_digest=False))
        except AttngradError as err:
            raise AttngradError(f"{err}; run the evaluation again with --resume to recompute it") from None
    if not parts:
        raise AttngradError(f"{out}: no results (no shards, no {PER_IMAGE}); run the evaluation first")
    evaluated = [p for p in parts if "index" in p and len(p["index"])]
    keys = [k for k in evaluated[-1] if not k.startswith("failed_")] if evaluated else []
    merged = {k: np.concatenate([p[k] for p in evaluated]) for k in keys}
    empty = {"failed_index": np.zeros(0, np.int64), "failed_message": np.zeros(0, str)}
    failed = {k: np.concatenate([p.get(k, v) for p in parts]) for k, v in empty.items()}
    if evaluated:  # later parts (shards) win over per_image.npz for the same image
        _, last = np.unique(merged["index"][::-1], return_index=True)
        order = len(merged["index"]) - 1 - last
        merged = {k: v[order] for k, v in merged.items()}
    _, first = np.unique(failed["failed_index"][::-1], return_index=True)
    order = np.sort(len(failed["failed_index"]) - 1 - first)
    merged.update({"failed_index": failed["failed_index"][order].astype(np.int64),
                   "failed_message": failed["failed_message"][order].astype(str)})  # fmt: skip
    return merged
