"""Property tests: random appends-with-truncation, syncs, reopens, compactions and torn
tails against a plain list model of the log."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udpraft.core.types import EMPTY_HARD_STATE, Entry, HardState
from udpraft.storage import FileLogStore, LogStore, SqliteLogStore

Op = tuple[str, int, int, int]  # (name, a, b, c); meaning depends on name

ops = st.lists(
    st.one_of(
        # append: start = last + 1 - back (clamped into the log), count entries, term
        st.tuples(st.just("append"), st.integers(0, 12), st.integers(1, 15), st.integers(1, 5)),
        st.tuples(st.just("sync"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("compact"), st.integers(0, 30), st.just(0), st.just(0)),
        st.tuples(st.just("hs"), st.integers(0, 9), st.integers(0, 3), st.just(0)),
    ),
    max_size=40,
)

OPENERS: dict[str, Callable[[str], LogStore]] = {
    "file": lambda d: FileLogStore(os.path.join(d, "wal"), segment_bytes_max=400,
                                   run_min_entries=10**9),
    # Every batch of 2+ entries as run frames: conflict cuts inside runs, overwrites,
    # rolls and compactions around them, reopened at random points.
    "file-runs": lambda d: FileLogStore(os.path.join(d, "wal"), segment_bytes_max=400,
                                        run_min_entries=2),
    "sqlite": lambda d: SqliteLogStore(os.path.join(d, "log.sqlite3")),
}


# Many short-lived logs: on tmpfs where there is one, since metadata operations and fsyncs
# on the VM disk cost milliseconds each. Durability itself is tested in test_storage_crash.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def make_entries(start: int, count: int, term: int) -> list[Entry]:
    return [
        Entry(i, term, f"{i}/{term}".encode() * (i % 4), client_id=f"c{term}")
        for i in range(start, start + count)
    ]


def run(kind: str, script: list[Op]) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        store = OPENERS[kind](d)
        model: list[Entry] = []  # entries first..last
        first = 1
        hs = EMPTY_HARD_STATE
        for name, a, b, c in script:
            last = first + len(model) - 1
            if name == "append":
                start = max(first, last + 1 - a)
                batch = make_entries(start, b, c)
                store.append(batch)
                model = model[: start - first] + batch
            elif name == "sync":
                store.sync()
            elif name == "reopen":
                store.close()
                store = OPENERS[kind](d)
            elif name == "compact":
                store.compact(first + a)
                new_first = store.first_index()
                assert first <= new_first <= max(first, min(first + a, last) + 1)
                model = model[new_first - first :]
                first = new_first
            else:
                hs = HardState(term=a, vote=f"n{b}" if b else "", commit=min(a, last))
                store.set_hard_state(hs)
            assert (store.first_index(), store.last_index()) == (first, first + len(model) - 1)
            assert store.load() == (hs, model)
        store.close()
        store = OPENERS[kind](d)
        assert store.load() == (hs, model)
        assert store.first_index() == first
        store.close()


@pytest.mark.parametrize("kind", sorted(OPENERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops)
def test_random_ops_match_a_list_model(kind: str, script: list[Op]) -> None:
    run(kind, script)


batches = st.lists(
    st.tuples(st.integers(0, 6), st.integers(1, 8), st.integers(1, 4), st.booleans()),
    min_size=1,
    max_size=25,
)


@pytest.mark.parametrize("run_min", [10**9, 2])
@settings(max_examples=150, deadline=None)
@given(batches=batches, where=st.floats(0, 1))
def test_crash_keeps_every_synced_entry_and_a_prefix_of_the_rest(
    run_min: int, batches: list[tuple[int, int, int, bool]], where: float
) -> None:
    """Cut the last segment anywhere after its last fdatasync, as a power cut would.

    With a frame per entry (``run_min`` 10**9) a conflict truncation is durable at once:
    what comes back is a prefix of the last log. With run frames (``run_min`` 2) a cut
    inside a run keeps the frame whole and is durable only with the frame that replaces its
    suffix: what comes back is a prefix of a log the store held at some point (never a mix
    of two), which can be older than the last sync, but only behind a conflict cut, i.e.
    in entries the leader had declared uncommitted. The synced entries before every cut
    are there in both cases."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        store = FileLogStore(d, segment_bytes_max=300, run_min_entries=run_min)
        model: list[Entry] = []
        history: list[list[Entry]] = [[]]  # every log the store held, oldest first
        synced = 0  # entries 1..synced are durable
        for back, count, term, sync in batches:
            start = max(1, len(model) + 1 - back)
            if start <= len(model):
                synced = min(synced, start - 1)  # the entries before a cut stay durable
            batch = make_entries(start, count, term)
            store.append(batch)
            model = model[: start - 1] + batch
            history.append(model)
            if sync:
                store.sync()
                synced = len(model)
        paths = store.segment_paths()
        last_seg = paths[-1]
        seg_first = int(os.path.basename(last_seg)[4:24])
        # Rolling fdatasyncs the sealed segment: all entries before the last segment are durable.
        synced = max(synced, seg_first - 1)
        durable_end = (
            store.entry_offset(synced + 1)[1]
            if synced + 1 <= len(model)
            else os.path.getsize(last_seg)
        )
        # Simulate the crash: the process dies (no close), the unsynced tail is cut somewhere.
        store._release()  # drop the dead process's handles, no sync
        size = os.path.getsize(last_seg)
        at = durable_end + round((size - durable_end) * where)
        os.truncate(last_seg, at)
        store = FileLogStore(d, segment_bytes_max=300, run_min_entries=run_min)
        got = list(store.load()[1])
        assert synced <= len(got) and got[:synced] == model[:synced]
        if run_min > 1000:
            assert got == model[: len(got)]
        else:
            assert any(got == h[: len(got)] and len(got) <= len(h) for h in history), got
        store.close()
