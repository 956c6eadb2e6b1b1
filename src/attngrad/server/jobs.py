"""Model work off the event loop: a bounded worker queue and long-running jobs.

Every forward/backward pass runs on the queue's worker thread(s). The queue
holds at most ``capacity`` tasks (running + waiting); one more is refused
with :class:`QueueFull`, which the app turns into ``503`` with a
``Retry-After`` estimate, so a burst of clients cannot pile up memory.

Jobs (class rewriting, attention transfer) run through the same queue and
report progress as they go; a client polls them, streams their events, or
cancels them. The job table is bounded too: the oldest finished jobs are
forgotten first.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

FINISHED = ("done", "failed", "cancelled")


class QueueFull(Exception):
    """The worker queue is at capacity; try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class JobCancelled(Exception):
    """Raised inside a job's work when its client cancelled it."""


class WorkQueue:
    """A fixed pool of worker threads with a bounded number of tasks in flight.

    Args:
        workers: threads running model work (1 for one model: hooks are not thread-safe).
        capacity: most tasks running or waiting; more raise :class:`QueueFull`.
    """

    def __init__(self, workers: int = 1, capacity: int = 8):
        if workers < 1 or capacity < workers:
            raise ValueError("a work queue needs workers >= 1 and capacity >= workers")
        self.workers = workers
        self.capacity = capacity
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attngrad-worker")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._durations: deque[float] = deque(maxlen=32)
        self.completed = 0
        self.rejected = 0

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; raises :class:`QueueFull` when ``capacity`` tasks are in flight."""
        with self._lock:
            if self._in_flight >= self.capacity:
                self.rejected += 1
                raise QueueFull(self._retry_after_locked())
            self._in_flight += 1
        try:
            return self._pool.submit(self._run, fn, args)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``submit`` and await the result from the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def _run(self, fn: Callable[..., T], args: tuple) -> T:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._durations.append(time.perf_counter() - start)
                self.completed += 1

    def _retry_after_locked(self) -> int:
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return int(min(60, max(1, math.ceil(mean * self._in_flight / self.workers))))

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: mean task time x tasks in flight / workers (1..60)."""
        with self._lock:
            return self._retry_after_locked()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            mean = sum(self._durations) / len(self._durations) if self._durations else None
            return {
                "workers": self.workers,
                "capacity": self.capacity,
                "in_flight": self._in_flight,
                "completed": self.completed,
                "rejected": self.rejected,
                "mean_task_s": mean,
            }

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Job:
    """A long task: status, progress in [0, 1], events (one per reported step), result or error."""

    kind: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "queued"
    progress: float = 0.0
    message: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop; it stops at its next :meth:`report` (or before it starts)."""
        self._cancel.set()
        with self._lock:
            if self.status == "queued":
                self.status, self.message = "cancelled", "cancelled before it started"

    def report(self, progress: float, message: str = "", **data: Any) -> None:
        """Record one step (``data`` becomes an event); raises :class:`JobCancelled` if cancelled."""
        if self._cancel.is_set():
            raise JobCancelled()
        with self._lock:
            self.progress = float(min(1.0, max(0.0, progress)))
            self.message = message
            self.events.append({"index": len(self.events), "progress": self.progress, "message": message, **data})

    def _set(self, **fields: Any) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self, name, value)

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        """JSON view: status, progress, message, events from index ``since``, result or error."""
        with self._lock:
            return {
                "id": self.id,
                "kind": self.kind,
                "status": self.status,
                "progress": self.progress,
                "message": self.message,
                "events": self.events[since:],
                "n_events": len(self.events),
                "result": self.result,
                "error": self.error,
            }


class JobManager:
    """Starts jobs on a :class:`WorkQueue` and keeps the last ``max_jobs`` of them.

    A job's work is ``fn(job)``; it calls ``job.report(...)`` after each step and
    returns a JSON-serialisable result. Exceptions become ``failed`` with the
    message as ``error`` (``error_message`` turns an exception into text).
    """

    def __init__(self, queue: WorkQueue, max_jobs: int = 64, error_message: Callable[[BaseException], str] = str):
        self.queue = queue
        self.max_jobs = max_jobs
        self._error_message = error_message
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, kind: str, fn: Callable[[Job], Any]) -> Job:
        """Queue a new job; raises :class:`QueueFull` when the queue is at capacity."""
        job = Job(kind=kind)
        self.queue.submit(self._execute, job, fn)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old_locked()
        return job

    def _execute(self, job: Job, fn: Callable[[Job], Any]) -> None:
        if job.cancelled:
            job._set(status="cancelled")
            return
        job._set(status="running", message="started")
        try:
            result = fn(job)
        except JobCancelled:
            job._set(status="cancelled", message="cancelled")
        except Exception as err:  # noqa: BLE001 - a failed job reports its error to the client
            job._set(status="failed", error=self._error_message(err), message="failed")
        else:
            job._set(status="done", progress=1.0, result=result, message="done")

    def _forget_old_locked(self) -> None:
        for job_id in [j.id for j in self._jobs.values() if j.status in FINISHED]:
            if len(self._jobs) <= self.max_jobs:
                break
            del self._jobs[job_id]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    async def stream(self, job: Job, poll_s: float = 0.1) -> AsyncIterator[dict[str, Any]]:
        """Yield each new event as it is reported, then a final snapshot when the job ends."""
        sent = 0
        while True:
            snap = job.snapshot(since=sent)
            for event in snap["events"]:
                yield {"type": "progress", **event}
            sent = snap["n_events"]
            if snap["status"] in FINISHED:
                yield {"type": "end", **{k: v for k, v in snap.items() if k != "events"}}
                return
            await asyncio.sleep(poll_s)
