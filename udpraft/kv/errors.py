"""etcd's errors, as its v3 JSON gateway reports them.

How this works: every failure of a KV request is a ``KvError`` carrying a gRPC status code
and etcd's message text (``etcdserver: ...``). The HTTP face turns it into etcd's gateway
shape, ``{"error": msg, "message": msg, "code": grpc_code}``, with the HTTP status that
grpc-gateway v1 derives from the gRPC code (FailedPrecondition is 412 there, not 400).
Pure: no IO; the state machine returns these inside apply results.
"""

from __future__ import annotations

from typing import Any

# gRPC status codes (google.golang.org/grpc/codes)
OK = 0
CANCELED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
DATA_LOSS = 15
UNAUTHENTICATED = 16

# grpc-gateway v1 runtime.HTTPStatusFromCode
HTTP_STATUS = {
    OK: 200,
    CANCELED: 408,
    UNKNOWN: 500,
    INVALID_ARGUMENT: 400,
    DEADLINE_EXCEEDED: 504,
    NOT_FOUND: 404,
    ALREADY_EXISTS: 409,
    PERMISSION_DENIED: 403,
    UNAUTHENTICATED: 401,
    RESOURCE_EXHAUSTED: 429,
    FAILED_PRECONDITION: 412,
    ABORTED: 409,
    OUT_OF_RANGE: 400,
    UNIMPLEMENTED: 501,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    DATA_LOSS: 500,
}

HTTP_REASON = {
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class KvError(Exception):
    """A request failed the way etcd would fail it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "message": self.message, "code": self.code}

    def stream_body(self) -> dict[str, Any]:
        """The shape grpc-gateway writes when a streaming call (watch, keepalive) fails."""
        st = self.http_status
        return {"error": {"grpc_code": self.code, "http_code": st, "message": self.message,
                          "http_status": HTTP_REASON.get(st, "Internal Server Error")}}

    def __repr__(self) -> str:
        return f"KvError({self.code}, {self.message!r})"


def _e(code: int, message: str) -> tuple[int, str]:
    return (code, message)


# (code, message) pairs; ``err(X)`` makes a fresh exception from one.
EMPTY_KEY = _e(INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = _e(INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = _e(INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = _e(INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = _e(INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = _e(INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
REQUEST_TOO_LARGE = _e(INVALID_ARGUMENT, "etcdserver: request is too large")
COMPACTED = _e(OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = _e(OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
LEASE_NOT_FOUND = _e(NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS = _e(FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = _e(OUT_OF_RANGE, "etcdserver: too large lease TTL")
NO_LEADER = _e(UNAVAILABLE, "etcdserver: no leader")
TIMEOUT = _e(UNAVAILABLE, "etcdserver: request timed out")
LEADER_CHANGED = _e(UNAVAILABLE, "etcdserver: leader changed")
TOO_MANY_REQUESTS = _e(UNAVAILABLE, "etcdserver: too many requests")
NOT_IMPLEMENTED = _e(UNIMPLEMENTED, "udpraft: not implemented")


def err(spec: tuple[int, str]) -> KvError:
    return KvError(spec[0], spec[1])


def invalid(message: str) -> KvError:
    """A request the JSON gateway could not decode (gRPC InvalidArgument)."""
    return KvError(INVALID_ARGUMENT, message)
