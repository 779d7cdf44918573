"""IndexSet (udpraft/service/indexset.py) against a plain set, and its memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.service.indexset import IndexSet

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 300)),
        st.tuples(st.just("prune"), st.integers(0, 320)),
        st.tuples(st.just("has"), st.integers(-3, 330)),
        st.tuples(st.just("above"), st.integers(-1, 320)),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(script=ops)
def test_matches_a_set(script: list[tuple[str, int]]) -> None:
    s = IndexSet()
    model: set[int] = set()
    for op, i in script:
        if op == "add":
            s.add(i)
            model.add(i)
        elif op == "prune":
            s.prune(i)
            model = {m for m in model if m > i}
        elif op == "has":
            assert (i in s) == (i in model)
        else:
            assert s.above(i) == sorted(m for m in model if m > i)
        assert len(s) == len(model) and list(s) == sorted(model) and s == model
    assert IndexSet(model) == s and (s == IndexSet(model | {999})) is False


def test_refuses_index_zero_and_is_small() -> None:
    with pytest.raises(ValueError):
        IndexSet().add(0)
    s = IndexSet(range(1, 1_000_001))  # every entry of a KV workload is hidden
    assert len(s) == 1_000_000 and s.nbytes() <= 125_001
    s.prune(999_990)
    assert len(s) == 10 and s.nbytes() <= 3 and 999_991 in s and 999_990 not in s
