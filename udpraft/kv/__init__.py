"""An etcd-compatible key-value store on udpraft.

The state machine (``machine``, ``mvcc``, ``lease``, ``watch``, ``types``, ``parse``,
``gojson``, ``jsonfmt``, ``errors``) is pure; ``http`` and ``server`` put it on a node's
HTTP port (``udpraft.kv.server.kv_app_factory``).
"""

from udpraft.kv.machine import KVMachine

__all__ = ["KVMachine"]
