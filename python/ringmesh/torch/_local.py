"""Local ranks: the processes torchrun starts on one host.

A host runs one ``ringmesh node`` and any number of trainer processes
(``torchrun --nproc_per_node N``). The processes reduce among themselves
with torch.distributed (gloo on CPU, NCCL on GPUs, set up by torchrun on
loopback: no rendezvous host), local rank 0 alone talks to the node and
exchanges the host's contribution with the mesh, and the result goes back
to every local rank. This module holds the collectives that takes; what is
exchanged lives with its users: a step's gradients and outcome in the
local-rank paths (``_paths``), the join in ``_optimizer``, the state check's
answer in ``_statecheck``.

Nothing here unpickles: small control messages travel as JSON in a byte
tensor.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch
import torch.distributed as dist


class LocalGroup:
    """The torch.distributed group of this host's trainer processes."""

    def __init__(self, group: Optional[Any] = None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)
        self.src = _global_rank(group, 0)
        # NCCL moves CUDA tensors only: host tensors go through the device.
        self.device = None
        if self.backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())

    @classmethod
    def detect(cls, group: Optional[Any] = None) -> Optional["LocalGroup"]:
        """The local group (``group``, default torch.distributed's world),
        or None when this trainer is a single process."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        if not (dist.is_available() and dist.is_initialized()):
            if local > 1:
                raise RuntimeError(f"torchrun started {local} local ranks but torch.distributed is not initialized: "
                                   "call torch.distributed.init_process_group() (gloo on CPU, nccl on GPUs) before "
                                   "creating the DistributedOptimizer")
            return None
        g = cls(group)
        if g.size == 1:
            return None
        world = os.environ.get("WORLD_SIZE")
        if group is None and world and int(world) != local:
            raise RuntimeError(f"the torch.distributed world has {world} processes but this host runs {local} local "
                               "ranks: start torchrun on each host on its own (torchrun --standalone "
                               "--nproc_per_node N), against that host's node; the mesh joins the hosts")
        return g

    @property
    def lead(self) -> bool:
        """Whether this is local rank 0, the one that talks to the node."""
        return self.rank == 0

    def _run(self, fn, t: torch.Tensor) -> None:
        if self.device is None:
            fn(t)
            return
        d = t.to(self.device)
        fn(d)
        t.copy_(d.cpu())

    def all_reduce(self, t: torch.Tensor) -> None:
        """Sum ``t`` (contiguous) over the local ranks, in place."""
        self._run(lambda x: dist.all_reduce(x, group=self.group), t)

    def broadcast(self, t: torch.Tensor) -> None:
        """Local rank 0's ``t`` onto every local rank, in place."""
        self._run(lambda x: dist.broadcast(x, self.src, group=self.group), t)

    def total(self, n: float) -> float:
        """The sum of ``n`` over the local ranks."""
        t = torch.tensor([float(n)], dtype=torch.float64)
        self.all_reduce(t)
        return float(t.item())

    def bcast_json(self, obj: Any) -> Any:
        """Local rank 0's ``obj`` (JSON-able) on every local rank."""
        if self.lead:
            data = json.dumps(obj).encode()
            n = torch.tensor([len(data)], dtype=torch.int64)
        else:
            n = torch.zeros(1, dtype=torch.int64)
        self.broadcast(n)
        buf = torch.zeros(int(n.item()), dtype=torch.uint8)
        if self.lead:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self.broadcast(buf)
        return obj if self.lead else json.loads(bytes(buf.tolist()).decode())

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Local rank 0's parameters and buffers on every local rank."""
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                if t.is_contiguous() and t.device.type == "cpu":
                    self.broadcast(t.data)
                else:
                    c = t.data.detach().cpu().contiguous()
                    self.broadcast(c)
                    t.data.copy_(c)


def _global_rank(group: Optional[Any], rank: int) -> int:
    if group is None:
        return rank
    get = getattr(dist, "get_global_rank", None) or dist.distributed_c10d._get_global_rank
    return get(group, rank)
