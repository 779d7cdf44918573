"""The pure Raft core: no sockets, clocks, disks or global randomness."""

from udpraft.core.errors import InvalidRequest, NotLeader, ProposalDropped, RaftError
from udpraft.core.messages import MESSAGE_TYPES, Message
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Config, ReadState, Ready, Role
from udpraft.core.sessions import SessionTable, Verdict
from udpraft.core.types import EMPTY_HARD_STATE, Entry, EntryKind, HardState

__all__ = [
    "EMPTY_HARD_STATE",
    "MESSAGE_TYPES",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidRequest",
    "Message",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "SessionTable",
    "Verdict",
]
