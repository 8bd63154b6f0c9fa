"""PyTorch helpers: data-parallel training over a ringmesh mesh.

Two lines change in a single-process training loop::

    import ringmesh, ringmesh.torch as rt
    client = ringmesh.Client(data_dir)
    opt = rt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, client)
    opt.join()                                   # joining a running mesh: loads its checkpoint
    while opt.next_step < steps:
        idx = opt.shard(global_batch)            # this member's share of the batch
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step(batch_size=len(x[idx]))         # weighted-mean gradients, then step

Under ``torchrun --standalone --nproc_per_node N`` (one per host, against
that host's node), the same optimizer reduces the host's local ranks first
(a torch DDP model keeps its bucketed all-reduce among them) and local rank
0 alone talks to the node; ``DistributedSampler`` cuts the batches by the
mesh's shares and local rank. See examples/pytorch/ddp.

``step`` averages the gradients of every member with the mean weighted by
each member's local batch size (so a global batch split unevenly still gives
the gradient of the global batch), applies the wrapped optimizer, and saves a
checkpoint when the node asks for one (members join at the next step). When
this node falls out of the mesh (codes ``waiting``, ``excluded``,
``not_member``) it joins again, loads the checkpoint of its entry step and
returns False: the step was not applied (with ``reconnect_timeout``, also
when the local node restarts; ``resume=True`` starts a restarted mesh from
its newest checkpoint). The members of a newly formed mesh start from one
state, as DDP broadcasts rank 0's parameters: the member with the lowest
peer ID saves its state through its node and the others load it in
``join`` (``sync_initial_state``). Every ``check_every`` steps the members
compare a hash of their state through the mesh; a member whose state
diverged from the majority's re-syncs from the mesh's checkpoint
(``DistributedOptimizer``, "state checks").

Gradients live in one shared-memory buffer, laid out parameter after
parameter in ``model.parameters()`` order; the node all-reduces it in place
(one all-reduce per step). CPU float32 parameters get their ``.grad`` bound
to their slice of that buffer, so once ``zero_grad(set_to_none=False)`` (the
torch 1.x default) is used, ``backward()`` accumulates directly into shared
memory and nothing is copied. Other gradients (CUDA, other dtypes, grads
replaced by ``set_to_none``) are copied in and out.

The package is split by concern; programs import everything from
``ringmesh.torch`` (the modules are private):

- ``_optimizer``: ``DistributedOptimizer``, the training loop's side of the
  mesh (joins and rejoins, applying a step, checkpoints every
  ``checkpoint_every`` steps, the log lines about the ring).
- ``_paths``: how a step's gradients reach the mesh, one class per path
  (plain, overlap, local ranks, local ranks with overlap) that the optimizer
  chooses when it is built; the DDP comm hook and ``DistributedDataParallel``.
- ``_averager``: ``GradientAverager`` and the shared buffer's layout.
- ``_overlap``: a DDP model's buckets handed to the node during backward.
- ``_local``: the collectives among a host's local ranks (torchrun).
- ``_membership``: ``Membership``, ``shard``, ``share_slice`` and ``join``
  (the entry step's checkpoint, a new mesh's initial state, resume).
- ``_checkpoint``: ``save`` and ``load`` (plain data only, nothing unpickled
  runs code), the checkpoint format and the RNG states.
- ``_statecheck``: ``state_hash`` and the state checks after a step.
- ``_diloco``: ``DiLoCo``, low-communication training: many local steps,
  then one outer step decided by the mesh; ``_quant``: the node's
  quantized wire formats in torch, for its error feedback.
- ``_sampler``: ``DistributedSampler``, batches cut by the mesh's step.
- ``_progress``: the progress lines.
- ``example``: ``python -m ringmesh.torch.example``, a smoke test.
"""

import logging

import torch  # noqa: F401 (rt.torch: the tests patch torch through it)

from ..client import Client, Response
from ..errors import CheckpointError, NodeConnectionLost, RingmeshConnectionError, RingmeshError
from . import _membership
from ._averager import GradientAverager
from ._checkpoint import CHECKPOINT_FORMAT, default_checkpoint_dir, load, save
from ._membership import SYNC_TIMEOUT, Membership, join, shard, share_slice
from ._optimizer import DistributedOptimizer
from ._paths import DistributedDataParallel
from ._sampler import DistributedSampler
from ._statecheck import state_hash
from ._diloco import DiLoCo

__all__ = [
    "DistributedOptimizer", "DiLoCo", "DistributedSampler", "DistributedDataParallel", "GradientAverager", "Membership",
    "join", "save", "load", "default_checkpoint_dir", "state_hash", "shard", "share_slice",
    "CHECKPOINT_FORMAT", "SYNC_TIMEOUT",
    # ringmesh's own types, importable from here as before the package was split
    "Client", "Response", "CheckpointError", "NodeConnectionLost", "RingmeshConnectionError", "RingmeshError",
]

log = logging.getLogger("ringmesh.torch")

# Private helpers the tests reach through the package.
_resume, _short = _membership._resume, _membership._short
