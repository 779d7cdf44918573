"""Safety invariants the simulator checks after every step.

How this works: checks are incremental, so a step costs time proportional to what changed.

- Election safety: ``leaders[term]`` records the one leader ever seen in each term.
- Log matching: ``seen[(index, term)]`` records the first entry seen with that index and term
  together with the term of its predecessor; any later entry with the same (index, term) must
  be identical and have a predecessor of the same term. By induction on the index this is
  Raft's Log Matching Property.
- Committed entries never change: ``committed`` is the global committed log; whenever a node
  reports a commit index, its entries up to it must agree with it (and extend it).
- Leader completeness: a new leader's log must contain every committed entry.
- State machine safety: every node applies exactly the committed log, in order, and its
  commit and applied indices never go backwards within one incarnation.
- Exactly-once: within a node's state machine, no (client, seq) is applied twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from udpraft.core.types import Entry


class InvariantViolation(AssertionError):
    pass


def _sig(e: Entry) -> tuple[object, ...]:
    return (e.data, e.kind, e.client_id, e.seq)


@dataclass(slots=True)
class Invariants:
    leaders: dict[int, str] = field(default_factory=dict)
    seen: dict[tuple[int, int], tuple[tuple[object, ...], int]] = field(default_factory=dict)
    committed: list[Entry] = field(default_factory=list)  # committed[i-1] is index i

    def fail(self, msg: str) -> None:
        raise InvariantViolation(msg)

    def on_leader(
        self, node: str, term: int, offset: int, term_at: Callable[[int], int | None]
    ) -> None:
        prev = self.leaders.get(term)
        if prev is not None and prev != node:
            self.fail(f"two leaders in term {term}: {prev} and {node}")
        self.leaders[term] = node
        # Leader completeness (Raft §5.4): every committed entry is in the new leader's log
        # (entries up to ``offset`` are in its snapshot, whose content is checked when made).
        for e in self.committed[offset:]:
            if term_at(e.index) != e.term:
                self.fail(
                    f"leader {node} of term {term} lacks committed entry {e.index}/{e.term}"
                )

    def on_entries(self, node: str, entries: list[Entry], prev_term: int) -> None:
        p = prev_term
        for e in entries:
            key = (e.index, e.term)
            got = self.seen.get(key)
            mine = (_sig(e), p)
            if got is None:
                self.seen[key] = mine
            elif got != mine:
                self.fail(
                    f"log matching broken at {node}: entry {key} differs from an earlier copy"
                )
            p = e.term

    def check_committed_range(
        self, node: str, lo: int, hi: int, entry_at: Callable[[int], Entry]
    ) -> None:
        """Entries lo..hi of ``node`` just became committed there: they must match the record."""
        for i in range(lo, hi + 1):
            e = entry_at(i)
            if i <= len(self.committed):
                c = self.committed[i - 1]
                if (c.term, _sig(c)) != (e.term, _sig(e)):
                    self.fail(
                        f"committed entry {i} differs at {node}: {c.term}/{_sig(c)!r} vs "
                        f"{e.term}/{_sig(e)!r}"
                    )
            elif i == len(self.committed) + 1:
                self.committed.append(e)
            else:
                self.fail(f"commit gap at {node}: index {i} beyond record {len(self.committed)}")

    def check_applied(self, node: str, e: Entry) -> None:
        if e.index > len(self.committed):
            self.fail(f"{node} applied uncommitted entry {e.index}")
        c = self.committed[e.index - 1]
        if (c.term, _sig(c)) != (e.term, _sig(e)):
            self.fail(f"{node} applied entry {e.index} that differs from the committed one")
