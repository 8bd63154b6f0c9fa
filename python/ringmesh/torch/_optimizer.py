"""The optimizer: ``DistributedOptimizer``.

This module owns the training loop's side of the mesh: joining (and
rejoining, reconnecting to a restarted node), a step's weights, applying
the step, checkpoints every ``checkpoint_every`` steps and the log lines
about the ring. How a step's gradients reach the mesh is its path's
(``_paths``), chosen when the optimizer is built; the state check after an
applied step is ``_statecheck``'s, the progress lines ``_progress``'s.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import Any, Dict, List, Optional

import torch

from .. import protocol as P
from ..client import Client, Response
from ..errors import NodeConnectionLost, RingmeshConnectionError, RingmeshError
from ._averager import GradientAverager
from ._checkpoint import load, save
from ._membership import SYNC_TIMEOUT, Membership, _resume, _short, join, shard
from ._paths import _ddp_running, choose_path, comm_hook
from ._progress import Progress
from ._statecheck import check_state, state_hash

log = logging.getLogger("ringmesh.torch")

# The DistributedOptimizers alive in this process: a DistributedSampler
# given none uses the one there is.
_OPTIMIZERS: "weakref.WeakSet" = weakref.WeakSet()


class DistributedOptimizer:
    """Wraps a torch optimizer, like Horovod's: ``step()`` averages the
    gradients across the mesh (weighted by each member's samples), then
    steps the wrapped optimizer. Call ``join()`` once before training.

    ``client``: the local node (default: ``Client(RINGMESH_DATA_DIR)``).

    **Several processes per host** (``torchrun --standalone
    --nproc_per_node N`` on every host, after
    ``torch.distributed.init_process_group()``): the local ranks reduce
    among themselves with torch.distributed, local rank 0 alone talks to
    the node and all-reduces the host's contribution (weighted by the
    host's samples) with the mesh, and the result goes back to every local
    rank, so each applies the same step. A ``model`` wrapped in torch's
    ``DistributedDataParallel`` keeps its bucketed all-reduce among the
    local ranks (a comm hook weights it by each rank's samples); a plain
    model is reduced after backward. ``local_group`` picks another
    torch.distributed group than the world.

    **Overlap** (``overlap=True``, the default for a DDP model, also a
    single process's: see ``DistributedDataParallel``): each gradient
    bucket goes to the mesh as soon as backward produces it, so the mesh's
    all-reduce runs while backward computes the rest. The step is
    submitted in parts of about ``part_mb`` MiB (whole parameters, the last
    layers first) that the node reduces in turn, all in the one round of
    the step: applied together or not at all. Every member must use the
    same ``overlap`` and ``part_mb`` (else ``settings_mismatch``); one
    backward per step (``model.no_sync()`` for accumulation steps). The
    bucket that starts the step needs this step's weight, so it overlaps
    when a ``DistributedSampler`` cut the batch; with ``batch_size=`` the
    parts go at ``step()``.

    ``step()`` takes its batch size from a ``DistributedSampler`` over this
    optimizer (or ``batch_size=``, this process's sample count). It returns
    False, with nothing applied, when this host had to join the mesh again
    (it dropped out, or its node restarted): the state is then the entry
    step's checkpoint, loaded on every local rank, and the sampler goes on
    from that step.

    ``checkpoint_every`` > 0 makes the first member save a checkpoint every
    that many steps (besides the saves the node asks for when members join),
    so a mesh that loses every node can restart from it.

    ``resume``: the first ``join`` starts from the newest checkpoint the
    node knows (for restarting a whole mesh).

    ``sync_initial_state`` (default True): the first step of a new mesh
    starts every member from one state, as DDP broadcasts rank 0's
    parameters: the member with the lowest peer ID saves its state through
    its node and the others fetch and load it in ``join`` (waiting up to
    ``sync_timeout`` seconds; see ``join``). False: each host keeps the
    state it brought (same seeds on every host, or diverging models).

    ``scheduler``: a per-step LR scheduler; ``step()`` steps it after the
    wrapped optimizer on every applied step (do not step it yourself), and
    its state goes into every checkpoint and is loaded with it, so a joiner
    continues the members' schedule.
    Checkpoints also carry the random number generators' states, which a
    joiner takes over.

    ``sync_buffers`` (default True): the model's floating-point buffers
    (BatchNorm running statistics) are averaged with the gradients every
    step, weighted the same way, so members never drift apart in them (as
    DDP's ``broadcast_buffers`` keeps them equal); a running mean then equals
    the single-process one over the global batch.

    ``check_every`` (default 100; 0: off): state checks. After every
    applied step whose ``next_step`` is a multiple of it, local rank 0
    reports a fingerprint of the parameters and the averaged buffers
    (``state_hash``) to its node, which compares it with the other
    members' (PROTOCOL.md, "State checks"). When the node finds this
    host's state differs from the majority's (a bug, a bit flip, code that
    changed the weights outside the optimizer), it logs an error, says so
    in ``ringmesh status`` and its metrics, and ``step`` re-syncs: it
    joins again as a joiner, loads the mesh's checkpoint of the entry
    step on every local rank, logs an error naming that step and returns
    False (``resyncs`` counts them; ``state_check`` is the node's last
    answer). Every member should use the same ``check_every``. The check
    is exact: hosts whose hardware rounds the optimizer's update
    differently (a CPU host and a GPU host) drift apart by rounding and
    are re-synced too; use a larger ``check_every`` or 0 there.

    ``reconnect_timeout`` > 0: when the local node goes away during an
    all-reduce (it crashed or restarted), wait up to that many seconds for
    it to come back on the same data dir, reconnect, join again (loading the
    entry step's checkpoint) and report the step as not applied; 0 raises
    ``NodeConnectionLost`` at once. Default: ``RINGMESH_RECONNECT_TIMEOUT``
    from the environment, else 0.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, client: Optional[Client] = None,
                 start_step: int = 0, wire: Optional[str] = None, checkpoint_every: int = 0,
                 checkpoint_dir: Optional[str] = None, join_timeout: Optional[float] = None,
                 bind_grads: bool = True, reconnect_timeout: Optional[float] = None, resume: bool = False,
                 sync_buffers: bool = True, scheduler: Optional[Any] = None, local_group: Optional[Any] = None,
                 overlap: bool = True, part_mb: float = 25.0, sync_initial_state: bool = True,
                 sync_timeout: float = SYNC_TIMEOUT, check_every: int = 100,
                 progress_every: Optional[float] = None, progress_steps: int = 0):
        from ._local import LocalGroup
        self.local = LocalGroup.detect(local_group)
        self.lead = self.local is None or self.local.lead
        # With local ranks, a failure to reach the node is raised in join,
        # after local rank 0 told the others: raised here, the others would
        # wait in join's first collective until gloo gave up with
        # "Connection closed by peer", hiding the cause.
        self._client_error: Optional[BaseException] = None
        if self.lead and client is None:
            try:
                data_dir = os.environ.get("RINGMESH_DATA_DIR")
                if not data_dir:
                    raise ValueError("no client: pass client=ringmesh.Client(data_dir) or set RINGMESH_DATA_DIR to "
                                     "the local node's data dir")
                client = Client(data_dir)
            except (ValueError, RingmeshConnectionError) as e:
                if self.local is None:
                    raise
                self._client_error = e
        self.client = client if self.lead else None
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.model = model
        self.start_step = start_step
        self.checkpoint_every = checkpoint_every
        self.checkpoint_dir = checkpoint_dir
        self.join_timeout = join_timeout
        if reconnect_timeout is None:
            reconnect_timeout = float(os.environ.get("RINGMESH_RECONNECT_TIMEOUT", "0") or 0)
        self.reconnect_timeout = reconnect_timeout
        self.resume = resume
        self.sync_initial_state = sync_initial_state
        self.sync_timeout = sync_timeout
        if check_every < 0:
            raise ValueError(f"check_every {check_every}: want 0 (off) or a positive number of steps")
        self.check_every = int(check_every)
        self.resyncs = 0
        self.state_check: Optional[Dict[str, Any]] = None  # the node's last answer about a state check
        self._resynced_at = -1  # the entry step of the last re-sync
        self.averager = GradientAverager(model, self.client, wire=wire, bind_grads=bind_grads,
                                         sync_buffers=sync_buffers)
        self.membership: Optional[Membership] = None
        self.last: Optional[Response] = None  # the last all-reduce's response
        self.rejoins = 0
        self._ring = None  # the ring of the last applied round, for _say_changes
        self._pending: Optional[Response] = None
        # _batch: (step, this process's samples, the host's samples), set by
        # a DistributedSampler for the step it cut; _syncs counts
        # synchronize calls (the sampler's check against prefetching).
        self._batch: Optional[tuple] = None
        self._syncs = 0
        self._warned_weights = False
        self._buf_snap: Optional[List[torch.Tensor]] = None
        self._overlap_wanted = overlap
        self._part_bytes = int(part_mb * (1 << 20))
        self._watch = None
        # extra: plain data saved with every checkpoint this optimizer
        # writes (a joiner finds it in ``membership.extra``).
        self.extra: Dict[str, Any] = {}
        # progress_every: seconds between progress lines (logger
        # ringmesh.torch, INFO); progress_steps: also every that many steps
        # (0: by time only). RINGMESH_PROGRESS=SECONDS sets the default; 0
        # turns them off.
        if progress_every is None:
            progress_every = float(os.environ.get("RINGMESH_PROGRESS", "30") or 0)
        self.progress_every = float(progress_every)
        self.progress_steps = int(progress_steps)
        self._progress = Progress()
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            self._attach_ddp(model)
        else:
            # The path of a step's gradients (_paths), chosen here once; a
            # DDP that wraps the model later chooses it anew, with its hook.
            self._path = choose_path(self)
            # A model that DDP wraps later (the tutorial's order: the
            # optimizer gets the bare model, the Trainer wraps it) is found
            # at its first forward under DDP, before its first backward.
            me = weakref.ref(self)  # the model must not keep the optimizer alive

            def watch(module, inputs):
                opt = me()
                if opt is not None:
                    opt._find_wrapper(module, inputs)
            self._watch = model.register_forward_pre_hook(watch)
        _OPTIMIZERS.add(self)

    def _attach_ddp(self, model) -> None:
        """Take over a DDP model and choose the path for it: its comm hook
        weights the local ranks and hands the buckets to the mesh
        (overlap)."""
        self.model = model
        overlap = None
        if self._overlap_wanted and self.averager.grad_elems > 0:
            from ._overlap import Overlap
            overlap = Overlap(self.averager, self._part_bytes)
        path = choose_path(self, overlap, hooked=True)
        if path.hooked:
            try:
                model.register_comm_hook(path, comm_hook)
            except RuntimeError as e:  # the program registered its own hook
                path = choose_path(self)
                log.warning("DDP comm hook not registered (%s): no overlap with the mesh, and local ranks' gradients "
                            "are averaged with equal weights", e)
        self._path = path
        path.start()

    def _find_wrapper(self, module, inputs) -> None:
        """Forward pre-hook of the bare model given to the optimizer: when
        a torch DDP runs it, the optimizer takes that DDP over (before the
        step's backward), as if it had been given the DDP model; without
        it, DDP would average the local ranks' gradients and the optimizer
        average them again, with no overlap."""
        ddp = _ddp_running(module, 3)
        if ddp is None:
            if self.local is None:  # a single process without DDP: nothing to find
                self._unwatch()
            return
        self._unwatch()
        if self._pending is not None:
            raise RuntimeError("ringmesh.torch.DistributedOptimizer: the model was wrapped in "
                               "DistributedDataParallel between synchronize() and step()")
        log.debug("the model runs under torch DDP: the optimizer hooks into its buckets")
        self._attach_ddp(ddp)

    def _unwatch(self) -> None:
        if self._watch is not None:
            self._watch.remove()
            self._watch = None

    # The wrapped optimizer's surface.
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, sd) -> None:
        self.optimizer.load_state_dict(sd)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the gradients in place (keeping them in shared memory)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def next_step(self) -> int:
        """The step the mesh expects next (the one ``step`` will apply)."""
        self._need_join()
        return self.membership.step

    @property
    def rank(self) -> int:
        """This host's rank in the mesh (its node's index in the members)."""
        self._need_join()
        return self.membership.rank

    @property
    def world(self) -> int:
        """The number of hosts (nodes) training the next step."""
        self._need_join()
        return self.membership.world

    @property
    def overlapped(self) -> tuple:
        """(parts of the last step that went to the mesh while backward
        still ran, parts of a step): (0, 0) without overlap; on local ranks
        other than 0, (0, parts)."""
        return self._path.overlapped

    @property
    def _hooked(self) -> bool:
        """Whether the step's path runs through DDP's comm hook."""
        return self._path.hooked

    @property
    def local_rank(self) -> int:
        return self.local.rank if self.local is not None else 0

    @property
    def local_size(self) -> int:
        return self.local.size if self.local is not None else 1

    def shard(self, n: int) -> slice:
        """This host's slice of a global batch of ``n`` items for the next
        step (local ranks split it further: see ``local_shard``)."""
        self._need_join()
        return self.membership.shard(n)

    def local_shard(self, n: int) -> slice:
        """This process's slice of a global batch of ``n`` items: its local
        rank's part of the host's slice."""
        h = self.shard(n)
        part = shard(h.stop - h.start, self.local_rank, self.local_size)
        return slice(h.start + part.start, h.start + part.stop)

    def _need_join(self) -> None:
        if self.membership is None:
            self.join()

    def join(self, resync: bool = False) -> Membership:
        """Join the mesh and load the checkpoint of the entry step (the
        first join with ``resume``: the newest checkpoint, see ``join``);
        with local ranks, rank 0 joins and every rank loads the same
        state. ``resync``: this host's state diverged from the mesh's; it
        joins as a joiner and loads the mesh's state even at the list's
        step."""
        first = self.membership is None
        m = None
        if self.lead:
            try:
                if self._client_error is not None:
                    raise self._client_error
                m = self._lead_join(first, resync)
            except BaseException as e:
                if self.local is not None:
                    self.local.bcast_json({"error": [getattr(e, "code", ""), str(e)]})
                raise
        if self.local is not None:
            d = self.local.bcast_json(None if m is None else {
                "step": m.step, "members": m.members, "self_id": m.self_id, "share": m.share, "loaded": m.loaded,
                "formed": m.formed, "run_id": m.run_id, "synced_from": m.synced_from,
                "restore_rng": m.loaded != getattr(m, "_initial_file", None)})
            while "waiting" in d:  # rank 0 still waits for the mesh
                d = self.local.bcast_json(None)
            if "error" in d:
                raise RingmeshError(d["error"][0] or P.CODE_INTERNAL, f"local rank 0's join failed: {d['error'][1]}",
                                    P.OP_JOIN)
            if m is None:
                m = Membership(step=d["step"], members=d["members"], self_id=d["self_id"], share=d["share"],
                               loaded=d["loaded"], formed=d["formed"], run_id=d["run_id"],
                               synced_from=d["synced_from"])
                if m.loaded:
                    # A new mesh's initial state leaves the random number
                    # generators alone, as on rank 0.
                    m.extra = load(m.loaded, self.model, self.optimizer, self.scheduler,
                                   restore_rng=d["restore_rng"]).get("extra") or {}
            # Every local rank starts from rank 0's parameters and buffers
            # (a fresh mesh: rank 0's initialization, or the state of the
            # mesh's member with the lowest peer ID that rank 0 loaded).
            self.local.broadcast_module(self.model)
        self.membership = m
        self._snapshot_buffers()
        return m

    # With local ranks, rank 0 joins in slices of this many seconds and tells
    # the others it still waits after each, so that their wait in a
    # collective never reaches the process group's timeout.
    _JOIN_SLICE = 60.0

    def _lead_join(self, first: bool, resync: bool = False) -> Membership:
        start = self.start_step if first else self.membership.step
        resumed = None
        if self.resume and first:
            resumed = _resume(self.model, self.optimizer, self.client, start, self.checkpoint_dir, self.scheduler)
            if resumed is not None:
                start = resumed["step"]
        deadline = None if self.join_timeout is None else time.monotonic() + self.join_timeout
        while True:
            timeout = self.join_timeout
            if self.local is not None:
                left = None if deadline is None else deadline - time.monotonic()
                timeout = self._JOIN_SLICE if left is None else max(min(self._JOIN_SLICE, left), 0.001)
            try:
                m = join(self.model, self.optimizer, self.client, start, timeout=timeout,
                         checkpoint_dir=self.checkpoint_dir, scheduler=self.scheduler, local_ranks=self.local_size,
                         sync_initial_state=self.sync_initial_state, sync_timeout=self.sync_timeout,
                         resync=resync)
                if resumed is not None and m.loaded is None:
                    m.loaded, m.checkpoint = resumed["path"], m.checkpoint or resumed
                return m
            except NodeConnectionLost as e:
                self._reconnect(e)
            except RingmeshError as e:
                if (self.local is None or e.code != P.CODE_TIMEOUT
                        or (deadline is not None and time.monotonic() >= deadline)):
                    raise
            if self.local is not None:
                log.debug("local rank 0 still waits for the mesh: told the other local ranks")
                self.local.bcast_json({"waiting": True})

    def _weights(self, batch_size: Optional[float]) -> tuple:
        """(this process's samples, the host's samples) for the next step."""
        # Every local rank decides the same way (the sampler cut this step
        # on all of them, or on none), so they enter the same collectives.
        step = self.membership.step
        if self._batch is not None and self._batch[0] == step:
            return self._batch[1], self._batch[2]
        if batch_size is None:
            raise ValueError("step needs batch_size (this process's sample count), or a DistributedSampler over "
                             "this optimizer cutting the batches")
        return batch_size, self._path.host_samples(batch_size)

    def synchronize(self, batch_size: Optional[float] = None) -> bool:
        """Average the gradients across the mesh (weight: this process's
        sample count, ``batch_size`` or the sampler's) without stepping; use
        it to clip or inspect the averaged gradients before ``step()``.
        Returns False when this host had dropped out of the mesh (or, with
        ``reconnect_timeout``, its node restarted): it joined again (loading
        the entry step's checkpoint) and this step's gradients were
        discarded."""
        self._need_join()
        self._syncs += 1
        n, host = self._weights(batch_size)
        t0 = time.monotonic()
        outcome = self._path.sync(n, host)
        self._progress.wait += time.monotonic() - t0
        if outcome["ok"]:
            self._pending = Response(outcome["resp"])
            self._pending_samples = host
            return True
        self._progress.rejoins += 1
        self.rejoins += 1
        self._pending = None
        self._restore_buffers()
        self.join()
        return False

    def _snapshot_buffers(self) -> None:
        """Keep the buffers of the last applied step (or the join): a step
        that fails must not leave its forward pass's updates behind (an
        integer counter such as BatchNorm's num_batches_tracked is not
        averaged, so it would drift from the other members' for good)."""
        with torch.no_grad():
            self._buf_snap = [b.detach().clone() for b in self.model.buffers()]

    def _restore_buffers(self) -> None:
        with torch.no_grad():
            for b, v in zip(self.model.buffers(), self._buf_snap or []):
                b.copy_(v)

    def _mesh_round(self, reduce) -> Dict[str, Any]:
        """Run ``reduce`` (the all-reduce with the mesh) and say what came
        of it: {"ok": True, "resp": ...} or {"ok": False} (join again).
        Errors that a join cannot mend are raised."""
        try:
            resp = reduce()
        except RingmeshError as e:
            if e.code not in P.REJOIN_CODES:
                raise
            log.info("rejoining after %s: %s", e.code, e.message)
        except NodeConnectionLost as e:
            self._reconnect(e)
        else:
            d = dict(resp)
            d["next_members"] = self._next_members(resp)
            return {"ok": True, "resp": d}
        return {"ok": False}

    def _next_members(self, resp: Response) -> List[str]:
        """The members of the next step: the round's, and its joiners
        (their order from the node; the round's members if it cannot say:
        the next round tells again)."""
        members = resp.members
        if resp.joiners:
            try:
                members = self.client.membership().members or members
            except (RingmeshError, RingmeshConnectionError) as e:
                log.debug("membership after step %d: %s", resp.next_step - 1, e)
        return list(members or [])

    def _reconnect(self, lost: NodeConnectionLost) -> None:
        """Wait up to reconnect_timeout for the node to come back and
        reconnect; raise ``lost`` when it does not (at once with 0)."""
        if self.reconnect_timeout <= 0:
            raise lost
        log.warning("%s; waiting up to %gs for the node to come back", lost, self.reconnect_timeout)
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                self.client.reconnect()
                return
            except RingmeshConnectionError:
                if time.monotonic() >= deadline:
                    raise lost from None
                time.sleep(0.2)

    def step(self, batch_size: Optional[float] = None, closure=None) -> bool:
        """Average the gradients (unless ``synchronize`` already did), step
        the wrapped optimizer and move to the next step. Returns False, with
        nothing applied, when this host had to join again (see
        ``synchronize``)."""
        if self._pending is None:
            if not self.synchronize(batch_size):
                return False
        resp, self._pending = self._pending, None
        if closure is not None:
            self.optimizer.step(closure)
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self._snapshot_buffers()
        self.last = resp
        if self.lead:
            self._say_changes(resp)
        self.membership = Membership(step=resp.next_step, members=resp.get("next_members") or resp.members,
                                     self_id=self.membership.self_id, share=resp.get("share"))
        if self.lead and (resp.save_checkpoint or (
                self.checkpoint_every > 0 and resp.next_step % self.checkpoint_every == 0
                and resp.members and resp.members[0] == self.client.self_id)):
            self._save_quietly(resp.next_step)
        self._progress.count(resp, float(getattr(self, "_pending_samples", 0) or 0), self.progress_every,
                             self.progress_steps, self.client)
        return not check_state(self, resp)

    def state_hash(self) -> str:
        """The fingerprint of this host's state that state checks compare:
        every parameter, and the floating-point buffers the mesh averages
        (``sync_buffers``); see ``ringmesh.torch.state_hash``."""
        seen, tensors = set(), []
        for t in list(self.model.parameters()) + list(self.averager.buffers):
            if id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
        return state_hash(tensors)

    def _say_changes(self, resp: Response) -> None:
        """Log what a trainer wants to know of an applied round: retries
        (a member failed mid-round) and members gone from or new in the
        ring."""
        step = resp.next_step - 1
        attempts = getattr(resp, "attempts", 0) or 0
        if attempts > 1:
            log.info("step %d applied after %d attempts (the ring changed mid-round)", step, attempts)
        ring = list(resp.members or [])
        prev = self._ring
        self._ring = ring
        if prev is None:
            return
        gone = [m for m in prev if m not in ring]
        new = [m for m in ring if m not in prev]
        if gone:
            log.warning("step %d: %s left the ring; %d members now", step, ", ".join(_short(m) for m in gone), len(ring))
        if new:
            log.info("step %d: %s joined the ring; %d members now", step, ", ".join(_short(m) for m in new), len(ring))

    def __repr__(self) -> str:
        m = self.membership
        local = f" local_rank={self.local_rank}/{self.local_size}" if self.local is not None else ""
        if m is None:
            return f"<ringmesh.torch.DistributedOptimizer {type(self.optimizer).__name__}{local}, not joined>"
        rank = m.members.index(m.self_id) if m.self_id in m.members else "-"
        return (f"<ringmesh.torch.DistributedOptimizer {type(self.optimizer).__name__} step={m.step} "
                f"rank={rank}/{m.world}{local} share={m.fraction:.3f} "
                f"members=[{', '.join(_short(x) for x in m.members)}] rejoins={self.rejoins}>")

    def _save_quietly(self, step: int) -> None:
        try:
            save(self.model, self.optimizer, step, self.client, self.checkpoint_dir, extra=self.extra or None,
                 scheduler=self.scheduler)
        except (RingmeshError, RingmeshConnectionError, OSError) as e:
            log.warning("checkpoint of step %d not handed to the node: %s", step, e)

    def save(self, extra: Optional[Dict[str, Any]] = None) -> Optional[Response]:
        """Save the current state (at ``next_step``) and hand it to the
        node. On local ranks other than 0 it does nothing and returns None
        (rank 0 holds the same state)."""
        if not self.lead:
            return None
        return save(self.model, self.optimizer, self.next_step, self.client, self.checkpoint_dir,
                    dict(self.extra, **(extra or {})) or None, scheduler=self.scheduler)

    def close(self) -> None:
        """Free the shared gradient buffer."""
        self.averager.close()
