"""Errors raised by the ringmesh client."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class RingmeshError(Exception):
    """An error answered by the node: ``code`` is one of the ``CODE_*``
    constants of :mod:`ringmesh.protocol` (``waiting``, ``excluded``,
    ``not_member``, ``step_mismatch``, ``bad_request`` ...), ``message`` the
    node's explanation."""

    def __init__(self, code: str, message: str, op: str = "", response: Optional[Mapping[str, Any]] = None):
        self.code = code
        self.message = message
        self.op = op
        self.response = dict(response or {})
        super().__init__(f"ringmesh {op or 'call'}: {message} ({code})")

    @property
    def next_step(self) -> Optional[int]:
        """The step the mesh expects next, when the node said (step_mismatch,
        waiting)."""
        return self.response.get("next_step")


class ProtocolError(Exception):
    """A frame that breaks the local protocol (bad length, not JSON, wrong
    response id). The connection is closed."""


class RingmeshConnectionError(ConnectionError):
    """Base of the connection errors: no node, or the node went away."""


class NodeNotRunning(RingmeshConnectionError):
    """No node answers on the data dir's socket."""


class NodeConnectionLost(RingmeshConnectionError):
    """The node closed the connection (it stopped, crashed or restarted) or
    did not answer within the client's timeout. The client is closed; call
    ``Client.reconnect()`` once the node is back, then ``join`` again."""


class CheckpointError(ValueError):
    """A checkpoint file that ``ringmesh.torch.load`` refuses: not a
    plain-tensor ``ringmesh.torch`` checkpoint (it would need more than
    tensors, numbers, strings, lists, tuples and dicts to unpickle, or is
    not a ``torch.save`` archive at all). Nothing in the file was run.
    ``path`` names the file."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(message)
