"""Request batching: concurrent requests of the same kind and settings run as one batched generate.

A collector task on the event loop takes jobs from a queue, waits up to `window_ms` after the oldest one for
compatible jobs (up to `max_batch_size`), and hands the batch to a single worker thread that owns the model, so
the event loop stays free while the model runs and the model never runs two batches at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from .engine import Answer, Job, run_batch
from .errors import APIError

log = logging.getLogger("speechllm.serving")


class Batcher:
    """Queue -> batches -> one model thread. `enabled=False` runs every job alone (for comparison)."""

    def __init__(self, model, *, enabled: bool = True, window_ms: float = 10.0, max_batch_size: int = 16,
                 max_queued: int | None = None):
        self.model, self.enabled, self.max_queued = model, enabled, max_queued
        self.batch_seconds = 1.0  # how long the last batch took: what a refused client is told to wait per batch
        self.window = window_ms / 1000 if enabled else 0.0
        self.max_batch_size = max_batch_size if enabled else 1
        self.batch_sizes: Counter[int] = Counter()  # how many batches of each size ran
        self.busy = False  # the model thread is generating
        self._queue: asyncio.Queue[Job] | None = None
        self._pending: list[Job] = []
        self._task = self._executor = None
        self._streams = 0

    @property
    def queued(self) -> int:
        return len(self._pending) + (self._queue.qsize() if self._queue else 0)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="speechllm-model")
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        for job in self._pending:
            job.cancel.set()
        if self._task:
            self._task.cancel()
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, job: Job, timeout: float) -> Answer:
        """Queue `job` and wait for its answer. After `timeout` seconds, or when the caller is cancelled (the
        client left), the job is cancelled, which stops its generation, and 504 / CancelledError is raised."""
        if self._task is None or self._task.done():
            raise APIError(503, "the model worker is not running (start the app with its lifespan)", "not_ready")
        if self.max_queued is not None and self.queued >= self.max_queued:
            wait = math.ceil(self.batch_seconds * (self.queued / self.max_batch_size + 1))
            raise APIError(429, f"{self.queued} requests are waiting for this model, this server's limit "
                                f"(max_queued): retry in {wait} s", "queue_full", headers={"Retry-After": str(wait)})
        job.future, job.arrived = asyncio.get_running_loop().create_future(), time.monotonic()
        job.key = self._key(job)
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            job.cancel.set()
            raise APIError(504, f"the request took longer than this server's limit of {timeout:g} s "
                                f"(request_timeout_s)", "timeout") from None
        except asyncio.CancelledError:
            job.cancel.set()
            raise

    def _key(self, job: Job) -> tuple:
        settings = job.settings
        # a streamed answer runs alone (its streamer follows one row); so does a seeded sample, whose draws
        # would otherwise depend on which requests it happened to share a batch with
        alone = job.on_text is not None or (getattr(settings, "seed", None) is not None
                                            and getattr(settings, "temperature", 0) > 0)
        if alone:
            self._streams += 1
        return (job.kind, settings, self._streams if alone else 0)

    async def _collect(self) -> None:
        while True:
            try:
                await self._collect_one()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving: the failed batch's requests already got their errors
                log.exception("the batcher failed")

    async def _collect_one(self) -> None:
        """Wait for the oldest job's window (or a full batch like it), then run that batch."""
        if not self._pending:
            self._pending.append(await self._queue.get())
        self._drain()
        head = self._pending[0]
        while sum(j.key == head.key for j in self._pending) < self.max_batch_size:
            remaining = head.arrived + self.window - time.monotonic()
            if remaining <= 0:
                break
            try:
                self._pending.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
            self._drain()
        batch = [j for j in self._pending if j.key == head.key][: self.max_batch_size]
        self._pending = [j for j in self._pending if j not in batch]
        batch = [j for j in batch if not j.cancel.is_set()]  # timed out or abandoned while queued
        if batch:
            await self._run(batch)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._pending.append(self._queue.get_nowait())

    async def _run(self, batch: list[Job]) -> None:
        self.busy, start = True, time.monotonic()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._work, batch)
        finally:
            self.busy, self.batch_seconds = False, time.monotonic() - start
        for job, result in zip(batch, results):
            if job.future.done() or job.cancel.is_set():  # nobody waits for it any more
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _work(self, batch: list[Job]) -> list:
        """On the model thread: answers, or the exception of each job that failed."""
        try:
            answers = run_batch(self.model, batch)
            self.batch_sizes[len(batch)] += 1
            return answers
        except Exception as error:
            if len(batch) > 1:  # one bad request must not fail the others: run each alone
                log.warning("a batch of %d failed (%s); running its requests one by one", len(batch), error)
                return [self._work([job])[0] for job in batch]
            return [error]
        finally:
            if len(batch) == 1 and batch[0].on_text is not None:
                batch[0].on_text(None)
