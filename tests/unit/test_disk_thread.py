"""The node's disk thread: order across both entry points, results, errors, shutdown."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from udpraft.io.disk import DiskThread


def test_call_runs_off_the_loop_thread_in_order_and_returns_results() -> None:
    disk = DiskThread("disk-test")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        futs = [disk.call(loop, job, i) for i in range(200)]
        return list(await asyncio.gather(*futs))

    try:
        assert asyncio.run(main()) == [i * i for i in range(200)]
    finally:
        disk.shutdown()
    assert [i for i, _ in seen] == list(range(200))
    assert {name for _, name in seen} == {"disk-test"}


def test_submit_and_call_share_one_queue() -> None:
    disk = DiskThread("disk-test")
    order: list[str] = []
    gate = threading.Event()

    def compact() -> None:
        gate.wait(5)
        order.append("compact")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = disk.submit(compact)
        second = disk.call(loop, order.append, "append")
        via_executor = loop.run_in_executor(disk, order.append, "snapshot")
        gate.set()
        await asyncio.gather(asyncio.wrap_future(first), second, via_executor)

    try:
        asyncio.run(main())
    finally:
        disk.shutdown()
    assert order == ["compact", "append", "snapshot"]


def test_an_exception_reaches_the_waiter_and_the_thread_keeps_going() -> None:
    disk = DiskThread("disk-test")

    def boom() -> None:
        raise OSError(5, "EIO")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        with pytest.raises(OSError, match="EIO"):
            await disk.call(loop, boom)
        return await disk.call(loop, len, b"abc")

    try:
        assert asyncio.run(main()) == 3
        with pytest.raises(OSError):
            disk.submit(boom).result(5)
    finally:
        disk.shutdown()


def test_shutdown_finishes_queued_work_then_refuses_more() -> None:
    disk = DiskThread("disk-test")
    done: list[int] = []
    gate = threading.Event()
    disk.submit(gate.wait, 5)
    futs = [disk.submit(done.append, i) for i in range(5)]
    gate.set()
    disk.shutdown(wait=True)
    assert done == [0, 1, 2, 3, 4]
    assert all(f.done() for f in futs)
    assert not disk._thread.is_alive()
    with pytest.raises(RuntimeError, match="shut down"):
        disk.submit(done.append, 9)
    disk.shutdown()  # twice is fine


def test_a_closed_loop_does_not_break_the_thread() -> None:
    disk = DiskThread("disk-test")
    gate = threading.Event()
    loop = asyncio.new_event_loop()
    disk.call(loop, gate.wait, 5)
    loop.close()
    gate.set()
    try:
        assert disk.submit(len, b"ab").result(5) == 2
    finally:
        disk.shutdown()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")
def test_the_thread_does_not_preempt_on_wakeup() -> None:
    disk = DiskThread("disk-test")
    try:
        tid = disk.submit(threading.get_native_id).result(5)
        assert tid != threading.get_native_id()
        assert os.sched_getscheduler(tid) == os.SCHED_BATCH
        assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_BATCH
    finally:
        disk.shutdown()
