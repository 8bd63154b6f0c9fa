"""The client of a node's local trainer API (DATA_DIR/ringmesh.sock)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import numpy as np

from . import protocol as P
from .errors import NodeConnectionLost, NodeNotRunning, ProtocolError, RingmeshError
from .shm import SharedMemory

# Values of fields the node leaves out when they are zero (Go omitempty).
_DEFAULTS: Dict[str, Any] = {
    "ok": False, "error": "", "code": "", "version": 0, "mesh": "", "self": "",
    "state": "", "reason": "", "buffer": 0, "step": 0, "next_step": 0,
    "members": [], "member_count": 0, "total_weight": 0.0, "attempts": 0,
    "joiners": [], "save_checkpoint": False, "checkpoint": None,
    "checkpoints": [], "fetches": [], "fetch": None, "status": None,
    "formed": False, "run_id": "",
}



log = logging.getLogger("ringmesh.client")

class Response(dict):
    """A node's answer: a dict whose fields also read as attributes, with
    the zero value for fields the node left out (``resp.step`` is 0, not
    missing, for step 0)."""

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in _DEFAULTS:
            d = _DEFAULTS[name]
            return list(d) if isinstance(d, list) else d
        raise AttributeError(name)


class SharedBuffer:
    """A float32 buffer in shared memory, registered with the node.

    ``array`` is a numpy view of it; ``tensor()`` a torch view (no copy).
    Write values there and call ``allreduce``; results appear in place.
    """

    def __init__(self, client: "Client", n: int):
        self._client = client
        self.size = n
        self.shm = SharedMemory(max(4 * n, 4))
        self.array = self.shm.float32(n)
        self.id = 0
        try:
            self.id = client._register(self.shm)
        except BaseException:
            self.shm.close()
            raise

    def tensor(self):
        """The buffer as a torch float32 tensor sharing its memory."""
        import torch
        return torch.from_numpy(self.array)

    def allreduce(self, step: int, reduce: str = "mean", weight: Optional[float] = None,
                  wire: Optional[str] = None, offset: int = 0, count: Optional[int] = None) -> Response:
        """All-reduce ``count`` elements from element ``offset`` in place for
        ``step``; see ``Client.allreduce`` for the arguments."""
        if count is None:
            count = self.size - offset
        if offset < 0 or count < 0 or offset + count > self.size:
            raise ValueError(f"elements [{offset}, {offset + count}) outside a buffer of {self.size}")
        return self._client._allreduce_range(self, 4 * offset, count, step, reduce, weight, wire)

    def allreduce_parts(self, step: int, parts, reduce: str = "mean", weight: Optional[float] = None,
                        wire: Optional[str] = None) -> Response:
        """Submit the whole buffer for ``step`` in ``parts`` and return at
        once: ``parts`` is a list of ``(offset, count)`` element ranges that
        tile the buffer, in the order the node reduces them (each in a round
        of its own, as soon as ``part_ready`` marks it; all of them make one
        step, applied together or not at all). Write each part, then mark
        it; ``wait`` returns the outcome, as ``allreduce`` does. Until then
        the buffer must not change except in parts not marked yet. Every
        member must cut the step alike (else ``settings_mismatch``)."""
        req: Dict[str, Any] = {"op": P.OP_ALLREDUCE, "step": int(step), "buffer": self.id, "offset": 0,
                               "count": int(self.size), "dtype": "float32", "reduce": reduce,
                               "parts": [[int(o), int(n)] for o, n in parts]}
        return self._client._call(self._client._reduce_options(req, weight, wire))

    def part_ready(self, step: int, part: int) -> None:
        """Mark part ``part`` (an index into ``allreduce_parts``' parts) of
        ``step`` ready: its data is in the buffer."""
        self._client._call({"op": P.OP_PART_READY, "step": int(step), "part": int(part)})

    def wait(self, step: int) -> Response:
        """The outcome of ``step``'s all-reduce in parts (raises as
        ``allreduce`` does); the result is in the buffer."""
        return self._client._call({"op": P.OP_ALLREDUCE_WAIT, "step": int(step)})

    def close(self) -> None:
        """Unregister the buffer (when the node is still there) and free it."""
        c, self._client = self._client, None
        if c is not None:
            c._forget(self)
        self.shm.close()
        self.array = None


class Client:
    """A connection to the ringmesh node whose data dir is ``data_dir``.

    ``timeout`` (seconds) bounds every call but ``join`` (which has its own):
    a node that does not answer within it is treated as gone
    (``NodeConnectionLost``). A node that stops or crashes closes the socket
    and the pending call raises ``NodeConnectionLost`` at once. Calls are
    sent one at a time; a Client may be shared between threads.
    """

    # join logs an unchanged wait again after this many seconds.
    WAIT_REPEAT = 30.0

    def __init__(self, data_dir: str, timeout: float = 300.0, name: Optional[str] = None):
        self.data_dir = os.path.abspath(data_dir)
        self.socket_path = os.path.join(self.data_dir, P.SOCKET_NAME)
        self.timeout = timeout
        self.name = name or os.path.basename(sys.argv[0] or "python") or "python"
        self._lock = threading.RLock()
        self._sock: Optional[socket.socket] = None
        self._next_id = 0
        self._buffers: List[SharedBuffer] = []
        self._staging: Optional[SharedBuffer] = None
        self.hello = Response()
        # sync_every > 0: this trainer's all-reduces are DiLoCo outer steps
        # over that many inner steps (rt.DiLoCo sets it); the node shows the
        # mode in its status. 0: every-step training.
        self.sync_every = 0
        self._connect()

    # -- connection ---------------------------------------------------------

    def _connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10.0 if self.timeout is None else min(self.timeout, 10.0))
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            if not os.path.exists(self.socket_path):
                why = f"no socket {self.socket_path}"
            else:
                why = f"stale socket {self.socket_path}: {e.strerror or e}"
            raise NodeNotRunning(
                f"no ringmesh node in {self.data_dir} ({why}): is `ringmesh node --data-dir {self.data_dir}` running?"
            ) from None
        self._sock = s
        self.hello = self._call({"op": P.OP_HELLO, "version": P.VERSION, "client": self.name})

    def reconnect(self) -> None:
        """Connect again (after the node restarted) and register this
        client's shared buffers again. The trainer must then ``join``."""
        with self._lock:
            self._close_sock()
            self._connect()
            for b in self._buffers:
                b.id = self._register(b.shm)

    def close(self) -> None:
        """Free this client's buffers and close the connection. A node whose
        trainer disconnects stops offering it for rounds."""
        with self._lock:
            for b in list(self._buffers):
                b.close()
            self._staging = None
            self._close_sock()

    def _close_sock(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def self_id(self) -> str:
        """This node's peer ID (as in ``members`` lists)."""
        return self.hello.self

    # -- framing ------------------------------------------------------------

    def call(self, op: str, **fields: Any) -> Response:
        """Send one request of ``op`` with ``fields`` (protocol field names,
        e.g. ``start_step``) and return the response. Raises RingmeshError
        for an error answer."""
        return self._call(dict(op=op, **fields))

    def _call(self, req: Dict[str, Any], timeout: Optional[float] = None, fd: Optional[int] = None) -> Response:
        op = req.get("op", "")
        with self._lock:
            if self._sock is None:
                raise NodeConnectionLost(
                    f"ringmesh {op}: not connected to the node in {self.data_dir} "
                    "(closed, or lost earlier); call reconnect() once the node runs")
            self._next_id += 1
            rid = self._next_id
            frame = P.encode_frame({"id": rid, **req})
            self._sock.settimeout(self.timeout if timeout is None else timeout)
            try:
                if fd is None:
                    self._sock.sendall(frame)
                else:
                    # The descriptor travels with the frame's first bytes.
                    sent = socket.send_fds(self._sock, [frame], [fd])
                    if sent < len(frame):
                        self._sock.sendall(frame[sent:])
                n = P.decode_length(self._recv_exact(4))
                resp = Response(P.decode_body(self._recv_exact(n)))
            except socket.timeout:
                self._close_sock()
                raise NodeConnectionLost(
                    f"ringmesh {op}: the node in {self.data_dir} did not answer within "
                    f"{self._sock_timeout_text(timeout)} (hung or overloaded?); connection closed: call "
                    "reconnect() and join again once it answers") from None
            except (OSError, EOFError) as e:
                self._close_sock()
                raise NodeConnectionLost(
                    f"ringmesh {op}: connection to the node in {self.data_dir} lost ({e}: the node stopped, "
                    f"crashed or restarted); once `ringmesh node --data-dir {self.data_dir}` runs again, "
                    "call reconnect() and join again") from None
            except BaseException:
                # ProtocolError, or interrupted (KeyboardInterrupt) mid-frame:
                # the stream cannot be resumed.
                self._close_sock()
                raise
            if resp.get("id", 0) == 0 and not resp.ok:
                # The node could not read the request and closes the connection.
                self._close_sock()
            elif resp.get("id") != rid:
                self._close_sock()
                raise ProtocolError(f"ringmesh {op}: response id {resp.get('id')} for request {rid}")
        if not resp.ok:
            raise RingmeshError(resp.code or P.CODE_INTERNAL, resp.error or "request failed", op, resp)
        return resp

    def _sock_timeout_text(self, timeout: Optional[float]) -> str:
        return f"{self.timeout if timeout is None else timeout:g}s"

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("node closed the connection")
            buf += chunk
        return bytes(buf)

    # -- membership ---------------------------------------------------------

    def join(self, start_step: int = 0, timeout: Optional[float] = None, want_checkpoint: bool = False,
             dest: Optional[str] = None, poll: float = 30.0, local_ranks: int = 0, resync: bool = False) -> Response:
        """Wait until this node is a training member; return the response
        with ``step`` (the entry step) and ``members``.

        ``start_step`` is the step to begin from when this node forms a new
        mesh (a trainer that trained before passes the step its state is
        at). With ``want_checkpoint``, a node admitted into a running mesh
        waits (bounded) for the checkpoint of the entry step, fetches it and
        writes it to ``dest`` (absolute path; default
        DATA_DIR/join-checkpoint.ckpt); ``checkpoint`` describes it
        (``path``, ``step``, ``root``): load it before training. ``formed``
        is True when the node is in a mesh formed anew at ``step`` (none of
        its steps decided yet; every member's trainer keeps the state it
        brought) rather than admitted into a running one; ``run_id`` names
        the run (the checkpoints saved in it carry it). When no
        member saved it in time the node answers code ``unavailable``: join
        again. ``timeout`` (seconds, None: no limit) bounds the wait; the
        node is asked in ``poll``-second slices so a hung node is noticed.
        Raises RingmeshError with code ``timeout`` when the time is up.
        ``local_ranks``: how many processes this trainer speaks for (the
        torchrun local ranks that reduced among themselves first; shown in
        ``ringmesh status``). ``resync``: this trainer's state diverged from
        the mesh's (a state check said so, see ``state_hash``): the node is
        admitted as a joiner at a later step even when the trainer is at the
        list's step, so that with ``want_checkpoint`` it gets the mesh's
        state of its entry step.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        said, said_at = None, 0.0
        t0 = time.monotonic()
        while True:
            # Short slices at first, so that a trainer waiting for members
            # says so (with the node's count) within seconds.
            slice_s = min(poll, 5.0) if said is None or time.monotonic() - t0 < 60 else poll
            if deadline is not None:
                slice_s = max(min(slice_s, deadline - time.monotonic()), 0.001)
            req = {"op": P.OP_JOIN, "start_step": int(start_step), "timeout_ms": max(int(slice_s * 1000), 1)}
            if local_ranks > 1:
                req["local_ranks"] = int(local_ranks)
            if resync:
                req["resync"] = True
            if want_checkpoint:
                req["want_checkpoint"] = True
                if dest:
                    req["dest"] = os.path.abspath(dest)
            try:
                resp = self._call(req, timeout=slice_s + max(10.0, slice_s))
                if said is not None:
                    log.info("joined at step %d with %d members", resp.step, len(resp.members or []))
                return resp
            except RingmeshError as e:
                if e.code != P.CODE_TIMEOUT or (deadline is not None and time.monotonic() >= deadline):
                    raise
                now = time.monotonic()
                if e.message != said or now - said_at >= self.WAIT_REPEAT:
                    # A new reason at once; the same one again every
                    # WAIT_REPEAT seconds, with the time waited so far.
                    log.info("waiting for the mesh (%.0fs): %s", now - t0, e.message)
                    said, said_at = e.message, now

    def state_hash(self, step: int, digest: str) -> Response:
        """Report ``digest`` (16 to 64 lowercase hex characters) as the
        fingerprint of the model state this trainer holds at ``step`` (after
        applying ``step - 1``). The node compares it with the other members'
        (PROTOCOL.md, "State checks"); the answer's ``state_check`` (None
        while none is decided) says what a comparison found: ``step``,
        ``agree``, ``reporting``, ``majority``, ``diverged`` (True: load the
        mesh's state, ``join(resync=True, want_checkpoint=True)``)."""
        return self._call({"op": P.OP_STATE_HASH, "step": int(step), "hash": str(digest)})

    def membership(self) -> Response:
        """The node's state (``state``, ``reason``), ``next_step`` and the
        agreed member list for the next step (``members``)."""
        return self._call({"op": P.OP_MEMBERSHIP})

    def status(self) -> Dict[str, Any]:
        """The object ``ringmesh status --json`` prints."""
        return self._call({"op": P.OP_STATUS}).status or {}

    def leave(self) -> None:
        """Tell the node this trainer stops; the mesh goes on without it."""
        self._call({"op": P.OP_LEAVE})

    # -- buffers and all-reduce ---------------------------------------------

    def _register(self, shm: SharedMemory) -> int:
        return self._call({"op": P.OP_REGISTER_FD, "bytes": shm.nbytes}, fd=shm.fd).buffer

    def _forget(self, b: SharedBuffer) -> None:
        with self._lock:
            if b in self._buffers:
                self._buffers.remove(b)
            if self._staging is b:
                self._staging = None
            if self._sock is not None and b.id:
                try:
                    self._call({"op": P.OP_UNREGISTER, "buffer": b.id})
                except (RingmeshError, NodeConnectionLost):
                    pass

    def shared_buffer(self, n: int) -> SharedBuffer:
        """Create and register a shared buffer of ``n`` float32s."""
        with self._lock:
            b = SharedBuffer(self, n)
            self._buffers.append(b)
            return b

    def shared_array(self, n: int, shape=None) -> np.ndarray:
        """A float32 numpy array of ``n`` elements (reshaped to ``shape``)
        that lives in a registered shared buffer: all-reducing it (or a
        slice of it) needs no copy. The buffer lives as long as the client."""
        a = self.shared_buffer(n).array
        return a if shape is None else a.reshape(shape)

    def shared_tensor(self, n: int, shape=None):
        """Like ``shared_array`` but a torch CPU float32 tensor."""
        import torch
        return torch.from_numpy(self.shared_array(n, shape))

    def _locate(self, address: int, nbytes: int) -> Optional[SharedBuffer]:
        for b in self._buffers:
            if b.shm.contains(address, nbytes) and (address - b.shm.address) % 4 == 0:
                return b
        return None

    def _staging_buffer(self, n: int) -> SharedBuffer:
        if self._staging is None or self._staging.size < n:
            if self._staging is not None:
                self._staging.close()
            size = 1024
            while size < n:
                size *= 2
            self._staging = self.shared_buffer(size)
        return self._staging

    def allreduce(self, x, step: int, reduce: str = "mean", weight: Optional[float] = None,
                  wire: Optional[str] = None) -> Response:
        """All-reduce ``x`` in place across the mesh for ``step``.

        ``x`` is a numpy array or a torch tensor (CPU or CUDA). A contiguous
        float32 array that lives in one of this client's shared buffers
        (``shared_array``, ``shared_tensor``) is reduced where it is; any
        other is copied into a staging buffer and back (other float dtypes
        go through float32). ``reduce`` is ``"mean"``, ``"sum"`` or
        ``"wmean"`` (weighted by ``weight``, e.g. the local sample count);
        ``wire`` is ``"float32"`` (default), ``"bfloat16"``, ``"float16"``,
        ``"int8"`` or ``"float4"`` (block-quantized, for DiLoCo).

        The response has ``step``, ``next_step``, ``members`` (the ring that
        produced the result), ``total_weight``, ``attempts``, ``joiners``
        and ``save_checkpoint``. Errors with codes in ``REJOIN_CODES`` mean:
        call ``join`` and continue from its step.
        """
        with self._lock:
            if _is_torch(x):
                return self._allreduce_tensor(x, step, reduce, weight, wire)
            if not isinstance(x, np.ndarray):
                raise TypeError(f"allreduce takes a numpy array or torch tensor, not {type(x).__name__}")
            n = x.size
            if x.dtype == np.float32 and x.flags.c_contiguous:
                b = self._locate(x.ctypes.data, 4 * n)
                if b is not None:
                    return self._allreduce_range(b, x.ctypes.data - b.shm.address, n, step, reduce, weight, wire)
            if not x.flags.writeable:
                raise ValueError("allreduce works in place: the array is read-only")
            st = self._staging_buffer(n)
            st.array[:n] = x.reshape(-1)
            resp = self._allreduce_range(st, 0, n, step, reduce, weight, wire)
            x[...] = st.array[:n].reshape(x.shape)
            return resp

    def _allreduce_tensor(self, t, step, reduce, weight, wire) -> Response:
        import torch
        n = t.numel()
        if t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous():
            b = self._locate(t.data_ptr(), 4 * n)
            if b is not None:
                return self._allreduce_range(b, t.data_ptr() - b.shm.address, n, step, reduce, weight, wire)
        st = self._staging_buffer(n)
        view = torch.from_numpy(st.array[:n])
        with torch.no_grad():
            view.copy_(t.reshape(-1))
            resp = self._allreduce_range(st, 0, n, step, reduce, weight, wire)
            t.copy_(view.view(t.shape))
        return resp

    def _allreduce_range(self, b: SharedBuffer, offset: int, count: int, step: int, reduce: str,
                         weight: Optional[float], wire: Optional[str]) -> Response:
        req: Dict[str, Any] = {"op": P.OP_ALLREDUCE, "step": int(step), "buffer": b.id, "offset": int(offset),
                               "count": int(count), "dtype": "float32", "reduce": reduce}
        return self._call(self._reduce_options(req, weight, wire))

    def _reduce_options(self, req: Dict[str, Any], weight: Optional[float], wire: Optional[str]) -> Dict[str, Any]:
        """req with an all-reduce's optional fields: weight, wire, and
        this trainer's sync_every."""
        if weight is not None:
            req["weight"] = float(weight)
        if wire:
            req["wire"] = wire
        if self.sync_every:
            req["sync_every"] = int(self.sync_every)
        return req

    # -- checkpoints --------------------------------------------------------

    def checkpoint_save(self, path: str, step: int) -> Response:
        """Hand the node the checkpoint file at ``path`` holding the state
        at ``step``; it stores, announces and serves it."""
        return self._call({"op": P.OP_CHECKPOINT_SAVE, "path": os.path.abspath(path), "step": int(step)})

    def checkpoint_list(self, fetches: bool = False):
        """The checkpoints known in the mesh: dicts with ``step``, ``root``,
        ``size``, ``local`` and ``providers``. With ``fetches``, return the
        pair (checkpoints, fetches in progress on this node)."""
        resp = self._call({"op": P.OP_CHECKPOINT_LIST})
        return (resp.checkpoints, resp.fetches) if fetches else resp.checkpoints

    def checkpoint_fetch(self, dest: str, root: Optional[str] = None, latest: bool = False,
                         fetch_id: Optional[str] = None, timeout: Optional[float] = None) -> Response:
        """Fetch the checkpoint ``root`` (or the newest complete one,
        ``latest=True``) from the mesh, verifying every chunk, into the file
        ``dest``; the response's ``checkpoint`` describes it (``path``,
        ``step``, ``root``, ``size``) and ``fetch`` says what the fetch did.
        ``fetch_id`` names the fetch in ``checkpoint_list(fetches=True)``
        (asked from another Client) while it runs."""
        if bool(root) == bool(latest):
            raise ValueError("checkpoint_fetch: give either root or latest=True")
        req: Dict[str, Any] = {"op": P.OP_CHECKPOINT_FETCH, "dest": os.path.abspath(dest)}
        if fetch_id:
            req["fetch_id"] = fetch_id
        if root:
            req["root"] = root
        else:
            req["latest"] = True
        return self._call(req, timeout=timeout)


def _is_torch(x) -> bool:
    mod = type(x).__module__ or ""
    return mod.startswith("torch") and hasattr(x, "data_ptr")
