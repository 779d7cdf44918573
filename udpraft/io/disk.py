"""A node's disk thread: every disk operation of one node, one at a time, in order.

How this works: ``DiskThread`` owns one thread and one FIFO queue. ``call(loop, fn, *args)``
queues ``fn(*args)`` and returns an asyncio future that the thread resolves through
``loop.call_soon_threadsafe`` once ``fn`` has returned (or raised). It is also a
``concurrent.futures.Executor`` (``submit``), so code that wants ``run_in_executor`` (the
snapshot transfer) shares the same thread and therefore the same order: a log append queued
after a compaction runs after it.

Why not ``ThreadPoolExecutor(1)`` + ``run_in_executor``: each hand-off there builds a
``concurrent.futures.Future`` (a Condition), a work item, takes two locks and a semaphore and
chains a second future, ~35-40 us of loop-thread CPU; ``call`` costs about half of that, and a
node hands off one batch per write (hundreds to thousands a second).

Scheduling: the thread runs as SCHED_BATCH (Linux; where it cannot, as it is). Waking it
for each write otherwise let it preempt the event-loop thread at once on the same core
(CFS wakeup preemption), only to block on the GIL that thread still held: two context
switches inside ``SimpleQueue.put``, 90-180 us of the loop thread's time per write on this
2-core VM (measured in the nodes under the KV benchmark), 25-45 us as SCHED_BATCH, which
keeps nice 0 but does not preempt on wakeup. KV puts/s +19-21% side by side.

Bounds: the queue holds what callers put in it, and they bound themselves — the runtime has
at most one persist batch in flight, the snapshotter one snapshot write and one compaction.
After ``shutdown`` new work is refused with RuntimeError; queued work still runs.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any, BaseException | None], None]]


class DiskThread(Executor):
    def __init__(self, name: str) -> None:
        self._q: SimpleQueue[_Job | None] = SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # orders _closed against put(), like the stdlib pool
        # daemon: a node that exits without shutdown() must not hang in interpreter exit; a
        # write cut short there was never acknowledged (acks follow the write).
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("disk thread is shut down")
            self._q.put(job)

    def call(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the disk thread; the future completes on ``loop``."""
        fut: asyncio.Future[T] = loop.create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        self._put((fn, args, done))
        return fut

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        cf: Future[T] = Future()

        def done(result: Any, exc: BaseException | None) -> None:
            if not cf.set_running_or_notify_cancel():
                return
            if exc is None:
                cf.set_result(result)
            else:
                cf.set_exception(exc)

        self._put(((lambda: fn(*args, **kwargs)), (), done))
        return cf

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; the thread finishes what is queued, then ends. ``cancel_futures``
        is accepted for the Executor interface; queued disk work is never dropped."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._q.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
        except (AttributeError, OSError):  # not Linux, or not allowed: keep the default policy
            pass
        while True:
            job = self._q.get()
            if job is None:
                return
            fn, args, done = job
            try:
                result = fn(*args)
            except BaseException as e:  # handed to the waiting side as is
                done(None, e)
            else:
                done(result, None)
            del job, fn, args, done


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)
