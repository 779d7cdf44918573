"""Leases as replicated state: id, granted TTL, attached keys. No clock in here.

How this works: a lease is created by a grant entry and removed by a revoke entry (a
client's, or the leader's "expire" once its own clock says the TTL ran out — see
``udpraft.kv.server``). Every replica applies the same entries, so every replica agrees on
which leases exist and which keys they hold; none of them ever decides expiry itself.
A put with a lease attaches the key (detaching it from its previous lease); a delete
detaches it; revoking a lease deletes its keys in one revision, in key order, as etcd does.
"""

from __future__ import annotations

from udpraft.kv import errors

MIN_TTL_S = 2  # etcd's minLeaseTTL with its default 100 ms heartbeat / 1 s election timeout
MAX_TTL_S = 9_000_000_000  # etcd's MaxLeaseTTL


class Lease:
    __slots__ = ("id", "keys", "ttl")

    def __init__(self, lease_id: int, ttl: int) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.keys: set[str] = set()


class LeaseTable:
    __slots__ = ("leases",)

    def __init__(self) -> None:
        self.leases: dict[int, Lease] = {}

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def __len__(self) -> int:
        return len(self.leases)

    def get(self, lease_id: int) -> Lease | None:
        return self.leases.get(lease_id)

    def grant(self, lease_id: int, ttl: int) -> Lease:
        if lease_id == 0:
            raise errors.err(errors.LEASE_NOT_FOUND)
        if ttl > MAX_TTL_S:
            raise errors.err(errors.LEASE_TTL_TOO_LARGE)
        if lease_id in self.leases:
            raise errors.err(errors.LEASE_EXISTS)
        lease = self.leases[lease_id] = Lease(lease_id, max(ttl, MIN_TTL_S))
        return lease

    def remove(self, lease_id: int) -> Lease | None:
        return self.leases.pop(lease_id, None)

    def attach(self, lease_id: int, key: str) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.add(key)

    def detach(self, lease_id: int, key: str) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)
