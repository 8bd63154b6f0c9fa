"""The paths a step's gradients take to the mesh.

A ``DistributedOptimizer`` reduces each step's gradients in one of four
ways, fixed by how the trainer runs:

- ``PlainPath``: one process; after backward the gradients are gathered
  into the shared buffer, all-reduced with the mesh and scattered back.
- ``OverlapPath``: one process under torch DDP; DDP's comm hook hands each
  gradient bucket to the node as backward produces it, and ``step()`` adds
  the buffers and waits for the outcome.
- ``LocalPath``: local ranks (torchrun); the host's weighted mean forms
  among them (in DDP's comm hook, or after backward for a plain model),
  local rank 0 alone all-reduces it with the mesh, and the outcome and the
  result go back to every local rank.
- ``LocalOverlapPath``: local ranks under DDP with overlap; as
  ``LocalPath``, but local rank 0 hands each bucket of the host's mean to
  the node as soon as the local ranks have reduced it.

This module owns those paths, ``choose_path`` (the one place that picks
one), the DDP comm hook that calls the path, and the DDP helpers: the
``DistributedDataParallel`` wrapper for a single process and finding the
DDP that runs a model. The optimizer picks its path when it is built, and
once more only when it takes over a DDP that wraps its model later (at
the first forward under DDP: the hook needs the DDP).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Dict, Optional

import torch

from .. import protocol as P
from ..client import Response
from ..errors import NodeConnectionLost, RingmeshError

log = logging.getLogger("ringmesh.torch")


class PlainPath:
    """One process, no DDP comm hook: the gradients reach the mesh after
    backward (gather, all-reduce, scatter)."""

    # hooked: the path runs through DDP's comm hook (registered on the DDP).
    hooked = False

    def __init__(self, opt: Any):
        # opt: the DistributedOptimizer; a path reads its step, its batch
        # and its averager, and runs its round with the mesh (_mesh_round).
        self.opt = opt
        self.av = opt.averager

    @property
    def overlapped(self) -> tuple:
        """(parts of the last step that went to the mesh while backward
        still ran, parts of a step)."""
        return (0, 0)

    def start(self) -> None:
        """The path is the optimizer's now (its hook registered)."""

    def host_samples(self, n: float) -> float:
        """The host's samples for the next step, given this process's
        ``n`` (the sampler cut no batch)."""
        return n

    def sync(self, n: float, host: float) -> Dict[str, Any]:
        """The step's round: this process's ``n`` samples of the host's
        ``host``. Returns the optimizer's ``_mesh_round`` outcome."""
        opt = self.opt
        return opt._mesh_round(lambda: self.av.average(opt.membership.step, host))


class OverlapPath(PlainPath):
    """One process under DDP: the comm hook hands each bucket to the node
    as backward makes it (``_overlap.Overlap``)."""

    hooked = True

    def __init__(self, opt: Any, overlap: Any):
        super().__init__(opt)
        self.overlap = overlap

    @property
    def overlapped(self) -> tuple:
        return (self.overlap.last_early, len(self.overlap.parts))

    def start(self) -> None:
        _unbind_grads(self.av)

    def sync(self, n: float, host: float) -> Dict[str, Any]:
        return self.opt._mesh_round(lambda: self._round(host))

    def _round(self, host: float) -> Response:
        """The buffers and what no bucket brought, then the outcome (the
        result in place in the gradients on success)."""
        self.av.gather_buffers()
        resp = self.overlap.finish(self.opt.membership.step, host, gather=True)
        self.av.scatter()
        return resp

    def hook(self, bucket):
        """The bucket to the node while backward goes on; DDP gets it back
        as it was (this host's gradients)."""
        t = bucket.buffer()
        params = list(bucket.parameters())
        self.overlap.bucket_done(_open_step(self.opt), _known_host_samples(self.opt), params, t)
        fut = torch.futures.Future()
        fut.set_result(t)
        return fut


class LocalPath(PlainPath):
    """Local ranks: the host's weighted mean over them, local rank 0's
    round with the mesh, and its outcome and result on every local rank.
    ``hooked``: DDP's comm hook forms the gradients' mean (weighted by
    each rank's samples); else it forms after backward."""

    def __init__(self, opt: Any, hooked: bool):
        super().__init__(opt)
        self.hooked = hooked
        self.local = opt.local

    def host_samples(self, n: float) -> float:
        opt = self.opt
        host = self.local.total(n)
        if self.hooked and not opt._warned_weights and abs(n * self.local.size - host) > 1e-9:
            opt._warned_weights = True
            log.warning("local ranks' batches differ in size and DDP averaged their gradients with equal weights: "
                        "cut the batches with ringmesh.torch.DistributedSampler to weight them by samples")
        return host

    def sync(self, n: float, host: float) -> Dict[str, Any]:
        av, opt = self.av, self.opt
        with torch.no_grad():
            self._gather()
            # With the DDP hook the gradients are the host's weighted mean
            # already; the buffers (and a plain model's gradients) are not.
            part = av.flat[av.grad_elems:] if self.hooked else av.flat
            if part.numel():
                if n > 0 and host > 0:
                    part.mul_(n / host)
                else:
                    part.zero_()
                self.local.all_reduce(part)
        err = None
        outcome: Dict[str, Any] = {}
        if opt.lead:
            try:
                outcome = opt._mesh_round(lambda: self._send(host))
            except BaseException as e:  # the other ranks wait for the outcome: tell them, then raise
                err = e
                outcome = {"ok": False, "error": [getattr(e, "code", ""), str(e), type(e).__name__]}
        outcome = self.local.bcast_json(outcome)
        if err is not None:
            raise err
        if "error" in outcome:
            code, msg, kind = outcome["error"]
            if kind == "NodeConnectionLost":
                raise NodeConnectionLost(f"local rank 0: {msg}")
            raise RingmeshError(code or P.CODE_INTERNAL, f"local rank 0: {msg}", P.OP_ALLREDUCE)
        if outcome["ok"]:
            self.local.broadcast(av.flat)
            av.scatter()
        return outcome

    def _gather(self) -> None:
        """This rank's gradients and buffers into the flat buffer."""
        self.av.gather()

    def _send(self, host: float) -> Response:
        """Local rank 0: the host's mean to the mesh, and the outcome."""
        return self.av.mesh(self.opt.membership.step, host)

    def hook(self, bucket):
        """The bucket's gradients weighted by this rank's samples, summed
        over the local ranks (the host's weighted mean)."""
        t = bucket.buffer()
        handoff = self._handoff(bucket)
        w = self._local_weight() / self.local.size
        if w == 0:
            t.zero_()
        else:
            t.mul_(w)
        fut = torch.distributed.all_reduce(t, group=self.local.group, async_op=True).get_future()

        def done(f):
            v = f.value()[0]
            if handoff is not None:
                handoff(v)
            return v
        return fut.then(done)

    def _handoff(self, bucket) -> Optional[Callable[[torch.Tensor], None]]:
        """What takes the host's reduced bucket on to the mesh (None:
        nothing, on this path)."""
        return None

    def _local_weight(self) -> float:
        """The hook's factor: this rank's samples over the host's mean."""
        opt = self.opt
        b = opt._batch
        if b is None or opt.membership is None or b[0] != opt.membership.step or b[2] <= 0:
            return 1.0
        return b[1] * self.local.size / b[2]


class LocalOverlapPath(LocalPath):
    """Local ranks under DDP with overlap: local rank 0 hands each bucket
    of the host's mean to the node once the local ranks reduced it; the
    other ranks go as on ``LocalPath``."""

    def __init__(self, opt: Any, overlap: Any):
        super().__init__(opt, hooked=True)
        self.overlap = overlap

    @property
    def overlapped(self) -> tuple:
        """On local ranks other than 0, (0, parts)."""
        return (self.overlap.last_early, len(self.overlap.parts))

    def start(self) -> None:
        if self.opt.lead:
            _unbind_grads(self.av)

    def _gather(self) -> None:
        if self.opt.lead:
            self.av.gather_buffers()  # rank 0's buckets are in the flat buffer (and on their way to the mesh)
        else:
            self.av.gather()

    def _send(self, host: float) -> Response:
        return self.overlap.finish(self.opt.membership.step, host, gather=False)

    def _handoff(self, bucket) -> Optional[Callable[[torch.Tensor], None]]:
        opt = self.opt
        if not opt.lead:
            return None
        params = list(bucket.parameters())
        step = _open_step(opt)
        return lambda v: self.overlap.bucket_done(step, _known_host_samples(opt), params, v)


def choose_path(opt: Any, overlap: Any = None, hooked: bool = False) -> PlainPath:
    """The path of ``opt``: by its local ranks (``opt.local``), whether
    its model's gradient buckets go to the mesh during backward
    (``overlap``, an ``_overlap.Overlap``) and whether DDP's comm hook
    forms the local ranks' mean (``hooked``)."""
    if opt.local is None:
        return OverlapPath(opt, overlap) if overlap is not None else PlainPath(opt)
    if overlap is not None:
        return LocalOverlapPath(opt, overlap)
    return LocalPath(opt, hooked)


def comm_hook(path: PlainPath, bucket):
    """DDP comm hook (registered with the optimizer's path as its state)."""
    return path.hook(bucket)


def _open_step(opt: Any) -> Optional[int]:
    return opt.membership.step if opt.membership is not None else None


def _known_host_samples(opt: Any) -> Optional[float]:
    """The host's samples for the open step when known without a
    collective (a DistributedSampler cut it), else None."""
    b, m = opt._batch, opt.membership
    if b is None or m is None or b[0] != m.step:
        return None
    return b[2]


def _unbind_grads(av: Any) -> None:
    """With overlap, .grad must not be the node's buffer: DDP copies each
    bucket's hook result (this host's gradients) into .grad when backward
    ends, and once the hook marked the last part the node may already have
    written the mesh's result there; that copy would overwrite it. The
    result is copied into .grad after the round (scatter) instead."""
    av.bind_grads = False
    with torch.no_grad():
        for p, v in zip(av.params, av.views):
            if p.grad is not None and p.grad.data_ptr() == v.data_ptr():
                p.grad = p.grad.clone()


def DistributedDataParallel(module: torch.nn.Module, **kwargs) -> torch.nn.parallel.DistributedDataParallel:
    """torch's ``DistributedDataParallel(module, **kwargs)``, for a
    ``DistributedOptimizer`` to overlap the model's gradient buckets with
    the mesh. Under torchrun use torch's own (after
    ``init_process_group``); a single process without torch.distributed
    gets a one-process gloo group first (in memory, on loopback), so that
    DDP runs and hands its buckets to the mesh as backward produces them."""
    import torch.distributed as dist
    if not dist.is_initialized():
        old = os.environ.get("GLOO_SOCKET_IFNAME")
        os.environ["GLOO_SOCKET_IFNAME"] = old or "lo"
        try:
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        finally:
            if old is None:
                del os.environ["GLOO_SOCKET_IFNAME"]
    return torch.nn.parallel.DistributedDataParallel(module, **kwargs)


def _ddp_running(module: torch.nn.Module, depth: int = 1):
    """The torch DDP whose forward is running ``module`` right now (found
    on the call stack above ``depth`` frames), or None."""
    ddp = torch.nn.parallel.DistributedDataParallel
    f = sys._getframe(depth)
    for _ in range(16):
        if f is None:
            return None
        me = f.f_locals.get("self")
        if isinstance(me, ddp) and me.module is module:
            return me
        f = f.f_back
    return None
