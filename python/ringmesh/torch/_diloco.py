"""DiLoCo: low-communication training, one outer step per ``sync_every``
inner steps, decided by the mesh.

This module owns ``DiLoCo`` (Douillard et al. 2023, arXiv 2311.08105, in
the shape torchft's ``local_sgd.DiLoCo`` has): every host runs
``sync_every`` steps of its own inner optimizer with no communication at
all, then the hosts average their pseudo-gradients (theta_global minus
their local parameters, weighted by the samples each processed since the
last outer step) in one mesh round, and every host takes the same outer
step (SGD with Nesterov momentum) on theta_global and restarts its local
parameters from it.

The outer step is a ``DistributedOptimizer`` step over the outer state
(theta_global in float32 on the CPU, and the outer optimizer's momentum),
so it inherits what a training step has: all or nothing on every member,
retried without a member that dies, joins at a step boundary with the
mesh's checkpoint of the outer state, a new mesh starting from the lowest
member's state, and state checks (here after every outer step by default:
a host whose theta_global differs from the majority's says so and re-syncs
from the mesh). The mesh's step counter counts outer steps.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch

from ..client import Client
from ._optimizer import DistributedOptimizer
from ._quant import Quantizer

log = logging.getLogger("ringmesh.torch")


def local_steps(plan: List[Dict[str, Any]], self_id: str, sync_every: int) -> int:
    """A host's inner steps per outer step under Dynamic Local Updates:
    floor(share / largest share * sync_every), at least 1; sync_every when
    the plan has no shares or does not name this host."""
    shares = {p.get("id"): float(p.get("share") or 0) for p in plan}
    top = max(shares.values(), default=0.0)
    mine = shares.get(self_id, 0.0)
    if top <= 0 or mine <= 0:
        return sync_every
    return max(1, int(mine / top * sync_every))


class _OuterState(torch.nn.Module):
    """theta_global: a float32 CPU copy of each trainable parameter."""

    def __init__(self, params: List[torch.Tensor]):
        super().__init__()
        self.theta = torch.nn.ParameterList(
            [torch.nn.Parameter(p.detach().to("cpu", torch.float32).clone()) for p in params])


class DiLoCo:
    """Trains ``model`` with ``inner_optimizer`` locally and takes one outer
    step with the mesh every ``sync_every`` inner steps::

        diloco = rt.DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=4e-4), client,
                           sync_every=100, wire="int8")
        diloco.join()
        while diloco.outer_step < outer_steps:
            x, y = next(batches)
            diloco.zero_grad()
            loss_fn(model(x), y).backward()
            diloco.step(batch_size=len(x))

    ``step`` steps the inner optimizer; on every ``sync_every``-th call it
    also runs the outer step: the pseudo-gradient theta_global - theta_local
    goes to the mesh, weighted by this host's samples since the last outer
    step (``batch_size`` per call, 1 if not given), the members' weighted
    mean is the outer optimizer's gradient (SGD, ``outer_lr``,
    ``outer_momentum``, Nesterov; the paper's 0.7 and 0.9), and the model's
    parameters restart from the new theta_global. The inner optimizer keeps
    its state across outer steps (DiLoCo's rule); a host that joins starts
    it fresh from theta_global.

    ``wire``: how the pseudo-gradients cross the network: "float32"
    (exact), "bfloat16", "int8" or "float4" (block-quantized; every member
    still ends with bit-identical values). With a quantized wire,
    ``error_feedback`` (default on) keeps what quantizing this host's
    pseudo-gradient dropped and adds it to the next one, so that 4 bits do
    not drift; the residual is updated once per outer step, whatever the
    node retries.

    ``adapt_to_speed`` (Dynamic Local Updates, Liu et al. 2024): hosts of
    different speeds finish an outer period together. Each host takes
    H_w = floor(s_w / s_max * sync_every) inner steps (at least 1), where s
    are the members' shares of the batch that the mesh agreed from their
    measured speeds (``ringmesh status``, plan), re-read after every outer
    step; the pseudo-gradients are weighted by samples, so a host that took
    fewer steps counts for less. ``local_steps`` is this host's H_w now.

    ``step`` returns False when the outer step could not be applied on
    this host (it had dropped out of the mesh, or its state differed from
    the majority's): it joined again, the model now holds the mesh's
    theta_global and the local progress since the last outer step is
    dropped. Other keyword arguments go to the ``DistributedOptimizer`` of
    the outer step (``checkpoint_every``, ``resume``, ``join_timeout``,
    ``reconnect_timeout``, ``local_group``, ``check_every`` (default 1:
    after every outer step), ...).
    """

    def __init__(self, model: torch.nn.Module, inner_optimizer: torch.optim.Optimizer,
                 client: Optional[Client] = None, sync_every: int = 500, outer_lr: float = 0.7,
                 outer_momentum: float = 0.9, nesterov: bool = True, wire: str = "float32",
                 error_feedback: Optional[bool] = None, adapt_to_speed: bool = False, **kwargs: Any):
        if sync_every < 1:
            raise ValueError(f"sync_every {sync_every}: want at least 1 inner step per outer step")
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.sync_every = int(sync_every)
        self.wire = wire
        self._params = [p for p in model.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("the model has no trainable parameters")
        self.outer = _OuterState(self._params)
        self.outer_optimizer = torch.optim.SGD(self.outer.parameters(), lr=outer_lr, momentum=outer_momentum,
                                               nesterov=nesterov and outer_momentum > 0)
        kwargs.setdefault("check_every", 1)
        self.mesh = DistributedOptimizer(self.outer_optimizer, self.outer, client, wire=wire, overlap=False,
                                         sync_buffers=False, **kwargs)
        if self.mesh.client is not None:
            self.mesh.client.sync_every = self.sync_every  # `ringmesh status` shows the mode
        quantizer = Quantizer.for_wire(wire)
        if error_feedback is None:
            error_feedback = quantizer is not None
        if error_feedback and quantizer is None:
            raise ValueError(f"error_feedback needs a quantized wire (int8, float4), not {wire!r}")
        self._quantizer = quantizer if error_feedback else None
        self._residual: Optional[List[torch.Tensor]] = None
        self.adapt_to_speed = adapt_to_speed
        self.local_steps = self.sync_every  # this host's inner steps per outer step (adapt_to_speed)
        self.inner_steps = 0  # inner steps since the last outer step
        self.samples = 0.0  # samples since the last outer step
        self.outer_steps_applied = 0

    # The mesh's view, as DistributedOptimizer's.
    @property
    def outer_step(self) -> int:
        """The outer step the mesh takes next (the mesh's step)."""
        return self.mesh.next_step

    @property
    def rank(self) -> int:
        return self.mesh.rank

    @property
    def world(self) -> int:
        return self.mesh.world

    @property
    def client(self) -> Optional[Client]:
        return self.mesh.client

    def join(self, resync: bool = False):
        """Join the mesh (see ``DistributedOptimizer.join``): a joiner loads
        the mesh's outer state; then the model starts from theta_global."""
        m = self.mesh.join(resync=resync)
        self._restart_local()
        self._plan_local_steps()
        return m

    def _plan_local_steps(self) -> None:
        """local_steps for the next outer period (adapt_to_speed): local rank
        0 reads the agreed shares from its node; every local rank takes its
        answer, so they run the same inner steps (and DDP's collectives)."""
        if not self.adapt_to_speed:
            return
        h = self.sync_every
        if self.mesh.lead:
            try:
                plan = (self.mesh.client.status().get("rounds") or {}).get("plan") or []
                h = local_steps(plan, self.mesh.client.self_id, self.sync_every)
            except Exception as e:  # a status that cannot be read keeps H: log, go on
                log.warning("adapt_to_speed: no plan from the node (%s); %d inner steps", e, h)
        if self.mesh.local is not None:
            h = self.mesh.local.bcast_json(h)
        self.local_steps = int(h)

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.inner_optimizer.zero_grad(set_to_none=set_to_none)

    def state_hash(self) -> str:
        """The fingerprint of theta_global that state checks compare."""
        return self.mesh.state_hash()

    def step(self, batch_size: Optional[float] = None, closure=None) -> bool:
        """One inner step; every ``sync_every``-th also the outer step.
        Returns False when the outer step was not applied here (see the
        class)."""
        if closure is not None:
            self.inner_optimizer.step(closure)
        else:
            self.inner_optimizer.step()
        self.inner_steps += 1
        self.samples += float(batch_size) if batch_size is not None else 1.0
        if self.inner_steps < self.local_steps:
            return True
        return self.sync()

    def sync(self) -> bool:
        """The outer step now, whatever the inner step count (``step``
        calls it every ``local_steps`` steps)."""
        with torch.no_grad():
            for i, (g, p) in enumerate(zip(self.outer.theta, self._params)):
                delta = g.detach() - p.detach().to("cpu", torch.float32)
                if self._quantizer is not None:
                    delta = self._feed_back(i, delta)
                if g.grad is None:
                    g.grad = torch.zeros_like(g)
                g.grad.copy_(delta)
        ok = self.mesh.step(batch_size=max(self.samples, 1e-9))
        if ok:
            self.outer_steps_applied += 1
        else:
            # Joined again: theta_global is the mesh's, and what this host
            # had not sent is gone with its local progress.
            self._residual = None
        self._restart_local()
        self._plan_local_steps()
        return ok

    def _feed_back(self, i: int, delta: torch.Tensor) -> torch.Tensor:
        """Error feedback: e += delta; q = Q(e); e -= q; send q."""
        if self._residual is None:
            self._residual = [torch.zeros_like(g) for g in self.outer.theta]
        e = self._residual[i]
        e.add_(delta)
        q = self._quantizer.quantize(e)
        e.sub_(q)
        return q

    def _restart_local(self) -> None:
        """theta_local <- theta_global; a new period begins."""
        with torch.no_grad():
            for g, p in zip(self.outer.theta, self._params):
                p.copy_(g.detach().to(p.device, p.dtype))
        self.inner_steps = 0
        self.samples = 0.0

    def close(self) -> None:
        self.mesh.close()

    def __repr__(self) -> str:
        return (f"DiLoCo(sync_every={self.sync_every}, wire={self.wire!r}, outer_step={self.outer_step}, "
                f"inner_steps={self.inner_steps})")
