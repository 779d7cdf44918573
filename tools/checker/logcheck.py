"""Lost-write / exactly-once check of the replicated log after a chaos run.

Linearizability of the submit history says the *order* of acknowledged
submits is consistent with real time; this check compares the
acknowledgements with the log that the cluster ends up with (e.g. read from
every node after healing and agreeing on the committed prefix):

* every acknowledged payload must appear in the final log exactly once, at
  the index it was acknowledged with (else: lost write / index mismatch);
* no payload may appear twice in the final log (duplicate apply, typically
  a retried submit that was committed twice);
* one index cannot hold two different payloads;
* a payload must not be acknowledged with two different indices.

Payloads are compared by value (via ``freeze``), so they should be unique per
submit - chaos clients typically use ``f"{client}-{seq}"``.  Entries whose
payload is a no-op (``None`` by default; see ``is_noop``) are ignored.
Unacknowledged payloads may or may not be in the log; that is not an error.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from .history import freeze

__all__ = ["check_log"]


def _is_none(payload: Any) -> bool:
    return payload is None


def check_log(
    acked: Iterable[tuple[Any, int]],
    final_log: Iterable[tuple[int, Any]],
    *,
    is_noop: Callable[[Any], bool] = _is_none,
) -> list[str]:
    """Return a list of problems (empty = the log is fine).

    ``acked`` holds ``(payload, index)`` for every submit the clients saw
    acknowledged; ``final_log`` holds ``(index, payload)`` for every entry of
    the final log.
    """
    problems: list[str] = []

    # index -> payload, and payload -> indices, from the final log.
    at_index: dict[int, Hashable] = {}
    positions: dict[Hashable, list[int]] = {}
    for index, payload in final_log:
        if is_noop(payload):
            continue
        frozen = freeze(payload)
        if index in at_index:
            if at_index[index] != frozen:
                problems.append(
                    f"index conflict: index {index} holds both {at_index[index]!r} and {frozen!r}"
                )
            else:
                problems.append(f"index {index} is listed twice in the final log")
            continue
        at_index[index] = frozen
        positions.setdefault(frozen, []).append(index)

    for payload, indices in positions.items():
        if len(indices) > 1:
            problems.append(
                f"duplicate: payload {payload!r} applied {len(indices)} times, "
                f"at indices {sorted(indices)}"
            )

    # payload -> acknowledged indices, in acknowledgement order.
    acks: dict[Hashable, list[int]] = {}
    for payload, index in acked:
        idx = acks.setdefault(freeze(payload), [])
        if index not in idx:
            idx.append(index)

    for payload, idx in acks.items():
        if len(idx) > 1:
            problems.append(
                f"payload {payload!r} acknowledged with {len(idx)} different indices {idx}"
            )
        found = positions.get(payload, [])
        for index in idx:
            if not found:
                problems.append(
                    f"lost write: payload {payload!r} acknowledged at index {index} "
                    "is missing from the final log"
                )
            elif index not in found:
                holder = at_index.get(index)
                there = "nothing" if holder is None else repr(holder)
                problems.append(
                    f"index mismatch: payload {payload!r} acknowledged at index {index} "
                    f"but found at {sorted(found)} (index {index} holds {there})"
                )
    return problems
