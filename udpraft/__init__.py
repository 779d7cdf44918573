"""udpraft: Raft consensus over UDP, with a pure simulated core.

Public client surface (see README): ``Client``, ``AsyncClient``, ``Result``, ``Entry``.
"""

from udpraft.client.aio import AsyncClient
from udpraft.client.blocking import Client
from udpraft.client.core import Entry, Result
from udpraft.errors import UdpRaftError

__all__ = ["AsyncClient", "Client", "Entry", "Result", "UdpRaftError"]
__version__ = "0.1.0"
