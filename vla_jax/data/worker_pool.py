"""Runs a dataset writer's jobs (episode rollouts) in worker processes and returns results in job order.

Dataset writers generate episodes that are independent given their seeds, so they can be rolled
out in parallel while the main process encodes and writes them with TFDS. Results come back in
the order the jobs were given, so a dataset never depends on how many workers wrote it.

Workers are started with "spawn", never "fork": the writing process has TensorFlow (and its
threads) loaded, which a forked child would inherit in an undefined state. A worker builds its
state (environment, expert) from a picklable factory on its first job, not in the pool's
initializer, because an initializer that raises makes the pool restart workers forever (a hang).
An exception in a worker reaches the caller as `WorkerError`, whose message holds the worker's
traceback.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from typing import Any, Callable, Iterable, Iterator

Job = Any
Worker = Callable[[Job], Any]


class WorkerError(RuntimeError):
  """A job raised in a worker process; the message holds the job and the worker's traceback."""


def process_count(num_workers: int) -> int:
  """Worker processes for a `num_workers` setting: 0 means one per CPU core."""
  if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
    raise ValueError(f"num_workers={num_workers!r} is not valid; expected an int >= 0 "
                     "(0 = one per CPU core, 1 = in this process)")
  return num_workers or max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def ordered_map(make_worker: Callable[[], Worker], num_workers: int,
                chunksize: int = 1) -> Iterator[Callable[[Iterable[Job]], Iterator[Any]]]:
  """Yields `run(jobs)`, an iterator of `worker(job)` for each job, in job order.

  make_worker: picklable (a module-level function or a `functools.partial` of one) returning the
    function that runs one job; each process calls it once, before its first job.
  num_workers: 0 = one process per CPU core; 1 = in this process, lazily, with no pool (an
    exception then propagates unchanged); W > 1 = W spawned processes.
  chunksize: jobs sent to a worker at a time (fewer, larger messages).

  Jobs run ahead of the consumer: leaving a `run(jobs)` iterator early wastes the jobs already
  sent, which finish in the background. The pool is terminated when the context exits.
  """
  processes = process_count(num_workers)
  if processes == 1:
    worker = make_worker()
    yield lambda jobs: map(worker, jobs)
    return
  with multiprocessing.get_context("spawn").Pool(processes, _init_worker, (make_worker,)) as pool:
    yield lambda jobs: pool.imap(_run_job, jobs, chunksize)


_MAKE_WORKER: Callable[[], Worker] | None = None
_WORKER: Worker | None = None


def _init_worker(make_worker: Callable[[], Worker]) -> None:
  global _MAKE_WORKER, _WORKER
  _MAKE_WORKER, _WORKER = make_worker, None


def _run_job(job: Job) -> Any:
  global _WORKER
  try:
    if _WORKER is None:
      _WORKER = _MAKE_WORKER()
    return _WORKER(job)
  except Exception:  # Re-raised with the traceback as text: the traceback object does not pickle.
    name = getattr(_MAKE_WORKER, "func", _MAKE_WORKER)
    name = getattr(name, "__qualname__", repr(name))
    raise WorkerError(f"job {job!r} of {name} failed in worker process {os.getpid()}:\n"
                      f"{traceback.format_exc()}") from None

