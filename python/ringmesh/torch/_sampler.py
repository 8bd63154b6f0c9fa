"""The sampler: ``DistributedSampler``, data that follows the mesh.

This module owns how a ``DataLoader``'s batches are cut from the mesh's
step: the global batch of each step (a seeded permutation per epoch, the
same on every host), this host's share of it and its local rank's part,
per rank (as torch's DistributedSampler) or as a batch sampler of the
global batch, and finding the process's ``DistributedOptimizer``.
"""

from __future__ import annotations

import sys
from typing import Optional

import torch

from ._optimizer import _OPTIMIZERS, DistributedOptimizer


def _the_optimizer() -> "DistributedOptimizer":
    """The one DistributedOptimizer alive in this process (a sampler given
    none steps its batches)."""
    alive = list(_OPTIMIZERS)
    if len(alive) > 1:  # some may be garbage in a cycle
        import gc
        gc.collect()
        alive = list(_OPTIMIZERS)
    if len(alive) == 1:
        return alive[0]
    if not alive:
        raise RuntimeError("ringmesh.torch.DistributedSampler: no DistributedOptimizer in this process yet: build "
                           "the optimizer (rt.DistributedOptimizer(torch.optim.SGD(...), model)) before iterating "
                           "the loader, or pass it: DistributedSampler(dataset, optimizer)")
    raise RuntimeError(f"ringmesh.torch.DistributedSampler: {len(alive)} DistributedOptimizers in this process: pass "
                       "the one that steps this loader's batches: DistributedSampler(dataset, optimizer)")


class DistributedSampler(torch.utils.data.Sampler):
    """Data for a ``DataLoader`` that follows the mesh. Two ways to use it:

    **As torch's** ``DistributedSampler``: ``DataLoader(dataset,
    batch_size=B, sampler=rt.DistributedSampler(dataset))``. ``B`` stays
    the per-rank batch size, as in torch DDP: every local rank of every
    host gets ``B`` samples per step, so step k's global batch is ``B`` x
    local ranks x hosts (every host must run the same ``B`` and
    ``--nproc_per_node``), cut from epoch k // steps_per_epoch's
    permutation of the dataset (seeded by ``seed`` and the epoch), the
    same on every host; by rank, not by the hosts' speeds. ``len()`` is
    ``steps_per_epoch * B`` (so ``len(loader)`` is the steps of an epoch),
    with steps_per_epoch = len(dataset) // (B x ranks of the mesh when it
    formed; a joiner takes the mesh's number from the checkpoint it
    loads). The optimizer is the process's ``DistributedOptimizer``
    (``optimizer=`` picks one), found when the loader is first iterated, so
    it may be built after the loader. ``num_replicas``, ``rank`` and
    ``drop_last`` are accepted for drop-in use and ignored: the mesh
    decides.

    **As a batch sampler** (``batch_size=`` given: the global batch):
    ``DataLoader(dataset, batch_sampler=rt.DistributedSampler(dataset, opt,
    batch_size=G))``: step k's global batch is ``G`` indices of epoch k //
    steps_per_epoch's permutation, and this process gets its host's share
    of it (by the agreed shares, which follow the hosts' speeds) and its
    local rank's part of that. A local rank whose part is empty gets one
    sample with weight zero.

    Either way the position is the mesh's step, so a host that joins, or
    rejoins after a failure, goes on at the entry step: across kills and
    joins every step's batch is computed once, by whoever holds its parts
    when it commits. (The step a member dies in is reduced over the
    survivors' parts, as ``total_weight`` of the answer says: the dead
    member's part of that one step is not computed; the next step's shares
    cover the whole batch again.)

    ``set_epoch(e)`` says which epoch the next iteration covers: what
    remains of it (nothing, when the mesh is past it: a host that joined
    late or resumed skips the epochs done). An iteration not preceded by a
    ``set_epoch`` (the tutorial's ``next(iter(loader))`` peek at the batch
    size, or a loop without set_epoch) covers what remains of the mesh's
    current epoch, so it is never empty while training goes on. The
    loader must not prefetch (``num_workers=0``): the share of step k+1 is
    known only once step k is committed.
    """

    _EXTRA = "ringmesh.sampler"

    def __init__(self, dataset, optimizer: Optional["DistributedOptimizer"] = None,
                 batch_size: Optional[int] = None, shuffle: bool = True, seed: int = 0,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, drop_last: bool = False):
        if optimizer is not None and not isinstance(optimizer, DistributedOptimizer):
            raise TypeError(f"ringmesh.torch.DistributedSampler: optimizer is a {type(optimizer).__name__}, not a "
                            "ringmesh.torch.DistributedOptimizer (num_replicas and rank are not needed: the mesh "
                            "decides)")
        self.n = dataset if isinstance(dataset, int) else len(dataset)
        if batch_size is not None and not 0 < batch_size <= self.n:
            raise ValueError(f"batch_size {batch_size} for a dataset of {self.n}")
        self._opt = optimizer
        self.batch_size = batch_size  # the global batch (batch sampler); None: per-rank, from the DataLoader
        self.per_rank: Optional[int] = None
        self.shuffle = shuffle
        self.seed = seed
        self.steps_per_epoch = self.n // batch_size if batch_size else 0
        self.epoch: Optional[int] = None
        self._armed = False  # set_epoch was called since the last iteration began
        self._perm = (None, None)

    @property
    def opt(self) -> "DistributedOptimizer":
        if self._opt is None:
            self._opt = _the_optimizer()
        return self._opt

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._armed = True

    # -- per-rank mode ------------------------------------------------------

    def _per_rank(self) -> int:
        """The DataLoader's per-rank batch size (its BatchSampler over this
        sampler)."""
        if self.per_rank is None:
            bs = torch.utils.data.BatchSampler
            f = sys._getframe(1)
            for _ in range(8):
                if f is None:
                    break
                me = f.f_locals.get("self")
                if isinstance(me, bs) and me.sampler is self:
                    self.per_rank = int(me.batch_size)
                    break
                f = f.f_back
            if self.per_rank is None:
                import gc
                for r in gc.get_referrers(self):
                    if isinstance(r, dict):
                        owners = [o for o in gc.get_referrers(r) if isinstance(o, bs)]
                        r = owners[0] if owners else r
                    if isinstance(r, bs) and r.sampler is self:
                        self.per_rank = int(r.batch_size)
                        break
            if self.per_rank is None:
                raise RuntimeError("ringmesh.torch.DistributedSampler: use it as DataLoader(dataset, batch_size=B, "
                                   "sampler=...) (B per rank), or give batch_size= (the global batch) and pass it "
                                   "as batch_sampler=")
        return self.per_rank

    def _setup_per_rank(self) -> None:
        """steps_per_epoch of the per-rank mode: the mesh's (a checkpoint's
        extra), or from the ranks of the mesh this trainer formed."""
        opt = self.opt
        b = self._per_rank()
        m = opt.membership if opt.membership is not None else opt.join()
        agreed = (m.extra or {}).get(self._EXTRA) or opt.extra.get(self._EXTRA)
        if agreed and int(agreed.get("per_rank", b)) == b:
            self.steps_per_epoch = int(agreed["steps_per_epoch"])
        if not self.steps_per_epoch:
            g = b * opt.local_size * opt.world
            self.steps_per_epoch = max(self.n // g, 1)
        opt.extra[self._EXTRA] = {"steps_per_epoch": self.steps_per_epoch, "per_rank": b}

    def __len__(self) -> int:
        if self.batch_size:
            return self.steps_per_epoch
        b = self._per_rank()
        if not self.steps_per_epoch:
            self._setup_per_rank()
        return self.steps_per_epoch * b

    # -- both ---------------------------------------------------------------

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm[0] != epoch:
            if self.shuffle:
                g = torch.Generator()
                g.manual_seed(self.seed + epoch)
                self._perm = (epoch, torch.randperm(self.n, generator=g))
            else:
                self._perm = (epoch, torch.arange(self.n))
        return self._perm[1]

    def global_batch(self, step: int, size: Optional[int] = None) -> torch.Tensor:
        """The dataset indices of step ``step``'s global batch (of ``size``,
        default the sampler's global batch size)."""
        size = size or self.batch_size
        epoch, i = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        lo = i * size
        if lo + size <= self.n:
            return perm[lo:lo + size]
        return perm[torch.arange(lo, lo + size) % self.n]  # the mesh grew mid-epoch: wrap around

    def __iter__(self):
        per_rank = not self.batch_size
        if per_rank:
            b = self._per_rank()
            if not self.steps_per_epoch:
                self._setup_per_rank()
        opt = self.opt
        armed, self._armed = self._armed, False
        if armed and self.epoch is not None:
            epoch = self.epoch
        else:
            epoch = opt.next_step // self.steps_per_epoch
        end = (epoch + 1) * self.steps_per_epoch
        return self._per_rank_iter(epoch, end, b) if per_rank else self._batch_iter(end)

    def _next_step(self, asked, end) -> Optional[int]:
        opt = self.opt
        k = opt.next_step
        if k >= end:
            return None
        if asked == opt._syncs:
            raise RuntimeError("ringmesh.torch.DistributedSampler: a batch was asked for before the last one was "
                               "stepped (a prefetching DataLoader?): use num_workers=0, the next step's share is "
                               "known only once this step is committed")
        return k

    def _steps(self, end):
        """The steps to give batches for, each once the last was stepped
        (_next_step), up to end."""
        asked = None
        while True:
            k = self._next_step(asked, end)
            if k is None:
                return
            asked = self.opt._syncs
            yield k

    def _batch_iter(self, end):
        opt = self.opt
        for k in self._steps(end):
            g = self.global_batch(k)
            h = opt.shard(self.batch_size)
            mine = opt.local_shard(self.batch_size)
            idx = g[mine].tolist()
            n = len(idx)
            if not idx:
                idx = g[h.start:h.start + 1].tolist() or g[:1].tolist()
            opt._batch = (k, n, h.stop - h.start)
            yield idx

    def _per_rank_iter(self, epoch, end, b):
        opt = self.opt
        for k in self._steps(end):
            host = b * opt.local_size
            g = self.global_batch(k, host * opt.world)
            lo = opt.rank * host + opt.local_rank * b
            opt._batch = (k, b, host)
            yield from g[lo:lo + b].tolist()
