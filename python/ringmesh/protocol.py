"""The local trainer API's wire format (node/localapi/localapi.go).

A connection carries frames both ways. A frame is a 4-byte big-endian length
n (1 <= n <= MAX_FRAME) followed by n bytes of one UTF-8 JSON object. The
client sends requests ``{"id": N, "op": ..., ...}``; the node answers each
with one response carrying the same id, in order, with ``"ok": true`` or an
``"error"`` and a ``"code"``. Tensor bytes never cross the socket: they live
in a shared-memory file registered once (op ``register``) and named by buffer
id, byte offset and element count.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, Mapping

from .errors import ProtocolError

VERSION = 1
MAX_FRAME = 1 << 20
SOCKET_NAME = "ringmesh.sock"

# Ops (append-only on the Go side).
OP_HELLO = "hello"
OP_REGISTER = "register"  # by path: refused by the node (the file could shrink under it)
OP_REGISTER_FD = "register_fd"  # a sealed memfd sent with the frame (SCM_RIGHTS)
OP_UNREGISTER = "unregister"
OP_JOIN = "join"
OP_ALLREDUCE = "allreduce"
OP_MEMBERSHIP = "membership"
OP_STATUS = "status"
OP_LEAVE = "leave"
OP_CHECKPOINT_SAVE = "checkpoint_save"
OP_CHECKPOINT_LIST = "checkpoint_list"
OP_CHECKPOINT_FETCH = "checkpoint_fetch"
OP_PART_READY = "part_ready"  # a part of the pending all-reduce in parts is in the buffer
OP_ALLREDUCE_WAIT = "allreduce_wait"  # the outcome of the pending all-reduce in parts
OP_STATE_HASH = "state_hash"  # a fingerprint of the trainer's model state at a step (state checks)
MIN_STATE_HASH, MAX_STATE_HASH = 16, 64  # lowercase hex characters
MAX_PARTS = 4096

# Error codes in a response's "code".
CODE_BAD_REQUEST = "bad_request"
CODE_UNSUPPORTED_VERSION = "unsupported_version"
CODE_NOT_MEMBER = "not_member"
CODE_WAITING = "waiting"
CODE_STEP_MISMATCH = "step_mismatch"
CODE_BUSY = "busy"
CODE_EXCLUDED = "excluded"
CODE_SHUTTING_DOWN = "shutting_down"
CODE_TIMEOUT = "timeout"
CODE_NOT_FOUND = "not_found"
CODE_UNAVAILABLE = "unavailable"
CODE_INTERNAL = "internal"
CODE_DISK_FULL = "disk_full"
CODE_HASH_MISMATCH = "hash_mismatch"
CODE_SETTINGS_MISMATCH = "settings_mismatch"

# Codes after which a trainer calls join again and goes on from its step.
REJOIN_CODES = frozenset({CODE_WAITING, CODE_EXCLUDED, CODE_NOT_MEMBER})

_HDR = struct.Struct(">I")


def encode_frame(msg: Mapping[str, Any]) -> bytes:
    """Encode one message as a frame: length prefix + compact UTF-8 JSON."""
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HDR.pack(len(body)) + body


def decode_length(hdr: bytes) -> int:
    """Return the body length of a 4-byte frame header; reject 0 and lengths
    above MAX_FRAME before anything is allocated."""
    if len(hdr) != 4:
        raise ProtocolError(f"frame header of {len(hdr)} bytes, want 4")
    (n,) = _HDR.unpack(hdr)
    if n == 0 or n > MAX_FRAME:
        raise ProtocolError(f"frame length {n} outside [1, {MAX_FRAME}]")
    return n


def decode_body(body: bytes) -> Dict[str, Any]:
    """Decode a frame body into a dict."""
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"frame body is not UTF-8 JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"frame body is a JSON {type(msg).__name__}, want an object")
    return msg


def decode_frame(frame: bytes) -> Dict[str, Any]:
    """Decode one complete frame (header + body)."""
    n = decode_length(frame[:4])
    if len(frame) != 4 + n:
        raise ProtocolError(f"frame holds {len(frame) - 4} body bytes, header says {n}")
    return decode_body(frame[4:])
