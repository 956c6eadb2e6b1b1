"""The resumable-run loop shared by every sharded test (one job: prepare, skip, compute, undo).

A resumable run (the perturbation test, the grid pointing game, the LM token tests) keeps one
results folder: a settings file written when the run starts and checked again by ``--resume``, and
one shard per finished batch. The pieces every such run shares live here:

- :func:`prepare_on_rank0`: prepare the folder (with the run's own integrity checks) on rank 0 only,
  and raise the same one-line error on every rank when it refuses;
- :func:`stored_settings`: read a run's settings file with the refusals every run shares (the folder is a
  file, a new run over a stored one, ``--resume`` with nothing to resume, an unreadable file);
- :func:`check_settings`: the settings file of a run whose identity is one JSON object: a new run may
  not overwrite a stored one, and ``--resume`` must give the same settings (the differences named);
- :func:`compute_batches`: compute the batches not yet done, with a progress bar; a run that fails or is
  stopped before its first shard removes what preparing the folder created (:func:`remove_created`),
  so nothing half-written is left behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from tqdm import tqdm

from ..errors import AttngradError
from .distributed import dist_info, from_rank0

T = TypeVar("T")


def new_paths(*paths: Path) -> list[Path]:
    """Those of ``paths`` that do not exist yet, in order (parents first): what preparing a run creates."""
    return [p for p in paths if not p.exists()]


def remove_created(created: Sequence[Path]) -> None:
    """Undo a run's preparation: remove ``created`` (folders with their content), last first."""
    for path in reversed(created):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def prepare_on_rank0(out: Path, prepare: Callable[[], list[Path]]) -> list[Path]:
    """Run ``prepare`` (which checks and creates the results folder ``out``, returning what it created) on
    rank 0; a refusal there is raised as the same :class:`AttngradError` on every rank, so none waits forever."""
    rank, _ = dist_info()
    error, created = None, []
    if rank == 0:
        try:
            created = prepare()
        except AttngradError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - told to every rank, so none waits for rank 0 forever
            error = f"cannot prepare {out}: {err}"
    error = from_rank0(error)
    if error:
        raise AttngradError(error)
    return created


def stored_settings(path: Path, *, resume: bool, start_on_resume: bool = False) -> dict[str, Any] | None:
    """The settings object a run stored in ``path`` (``None``: no run there yet); writes nothing.

    Refuses (:class:`AttngradError`) a results folder that is a file, a stored run without ``resume``,
    ``resume`` without a stored run (unless ``start_on_resume``: a new run starts) and a settings file
    that cannot be read or is not one JSON object.
    """
    out = path.parent
    if out.exists() and not out.is_dir():
        raise AttngradError(f"{out} is a file; --out must name a folder")
    if not path.exists():
        if resume and not start_on_resume:
            raise AttngradError(f"nothing to resume in {out} (no {path.name}); run without --resume")
        return None
    if not resume:
        raise AttngradError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AttngradError(f"{path} cannot be read ({type(err).__name__}: {err}); choose another --out") from None
    if not isinstance(stored, dict):
        raise AttngradError(f"{path} is not a settings object; choose another --out")
    return stored


def check_settings(path: Path, settings: dict[str, Any], *, resume: bool, start_on_resume: bool = False) -> bool:
    """Check the settings file ``path`` of a run against ``settings``; writes nothing.

    A new run (``resume`` false) may not find one; ``--resume`` needs one equal to ``settings`` (as stored:
    tuples become lists), or, with ``start_on_resume``, none (a new run starts). Returns whether it exists.
    Raises :class:`AttngradError` naming what differs (:func:`stored_settings` for the other refusals).
    """
    stored = stored_settings(path, resume=resume, start_on_resume=start_on_resume)
    if stored is None:
        return False
    current = json.loads(json.dumps(settings))
    if stored != current:
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise AttngradError(f"--resume: the run in {path.parent} was made with other settings ({', '.join(changed)}); "
                            "use the same ones or choose another --out")
    return True


def compute_batches(todo: Sequence[int], compute: Callable[[int, T], object], *, inputs: Iterable[T] | None = None,
               created: Sequence[Path] = (), total: int | None = None, done: int | None = None,
               weight: Callable[[int], int] | None = None, desc: str = "", unit: str = "batch",
               progress: bool = True) -> int:
    """Compute and write the batches ``todo`` (those not yet done), in order, with a progress bar.

    ``compute(j, item)`` computes batch ``j`` and writes its shard; ``item`` is the next of ``inputs``
    (e.g. a DataLoader over ``todo``), or ``None`` without them. The bar counts ``weight(j)`` per batch
    (default 1) up to ``total``, starting at ``done`` (the finished batches' share; default: ``total``
    less the batches to do). When ``compute`` fails (or the run is stopped) before any batch was written,
    ``created`` (what preparing the run created, :func:`new_paths`) is removed. Returns the batches written.
    """
    size = weight or (lambda j: 1)
    left = sum(size(j) for j in todo)
    total = left if total is None else total
    bar = tqdm(total=total, initial=total - left if done is None else done, unit=unit, desc=desc,
               disable=not progress, dynamic_ncols=True)
    items: Iterable[Any] = inputs if inputs is not None else (None for _ in todo)
    written = 0
    try:
        for j, item in zip(todo, items, strict=True):
            compute(j, item)
            written += 1
            bar.update(size(j))
    except BaseException:
        if written == 0:
            remove_created(created)  # nothing computed: leave nothing behind
        raise
    finally:
        bar.close()
    return written
