"""Membership: where a trainer stands in the mesh, and how it gets there.

This module owns ``Membership`` (the step the mesh expects next, the
members, this member's share of the global batch), the batch arithmetic
(``shard``, ``share_slice``) and ``join``: joining through the node,
loading the mesh's checkpoint of the entry step, starting every member of
a new mesh from one state (``sync_initial_state``) and resuming a
restarted mesh from its newest checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .. import protocol as P
from ..client import Client
from ..errors import CheckpointError, RingmeshError
from ._checkpoint import default_checkpoint_dir, load, save

log = logging.getLogger("ringmesh.torch")


def shard(n: int, rank: int, world: int) -> slice:
    """The slice of a global batch of ``n`` items that member ``rank`` of
    ``world`` takes: contiguous, sizes differing by at most one."""
    if world <= 0 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    q, r = divmod(n, world)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (1 if rank < r else 0))


def share_slice(n: int, share: Dict[str, int]) -> slice:
    """The slice of a global batch of ``n`` items that a node's ``share``
    (``{"lo", "hi", "units"}``, from a join or all-reduce answer) names:
    ``[n*lo//units, n*hi//units)``, so the members' slices cover the batch
    exactly once whatever the split."""
    units = int(share["units"])
    if units <= 0 or not 0 <= int(share["lo"]) <= int(share["hi"]) <= units:
        raise ValueError(f"bad share {share}")
    return slice(n * int(share["lo"]) // units, n * int(share["hi"]) // units)


@dataclass
class Membership:
    """Where this trainer stands: the step the mesh expects next, the
    members training it (rank = index of this node in ``members``) and this
    member's share of the step's global batch, as the mesh agreed it (it
    follows the members' measured speeds; None from a node that sends
    none: equal parts by rank)."""
    step: int
    members: List[str]
    self_id: str
    checkpoint: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    share: Optional[Dict[str, int]] = None
    # loaded: the checkpoint file the join loaded (None: the state stayed).
    loaded: Optional[str] = None
    # formed: the join put this trainer into a mesh formed anew at ``step``
    # (not admitted into a running one); run_id: the run it joined.
    formed: bool = False
    run_id: str = ""
    # synced_from: in a new mesh, the member whose state every member
    # started from (sync_initial_state; this node's own ID on that member).
    synced_from: Optional[str] = None

    @property
    def fraction(self) -> float:
        """This member's fraction of the step's global batch."""
        if self.share:
            return (self.share["hi"] - self.share["lo"]) / self.share["units"]
        return 1 / self.world

    @property
    def world(self) -> int:
        return len(self.members)

    @property
    def rank(self) -> int:
        try:
            return self.members.index(self.self_id)
        except ValueError:
            raise RuntimeError(f"this node {self.self_id} is not in the member list {self.members}") from None

    def shard(self, n: int) -> slice:
        """This member's slice of a global batch of ``n`` items."""
        if self.share:
            return share_slice(n, self.share)
        return shard(n, self.rank, self.world)


# How long the members of a new mesh wait for the state of its first step
# that the member with the lowest peer ID saves (sync_initial_state).
SYNC_TIMEOUT = 60.0


def join(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer], client: Client,
         start_step: int = 0, timeout: Optional[float] = None, checkpoint_dir: Optional[str] = None,
         max_unavailable: int = 3, resume: bool = False, scheduler: Optional[Any] = None,
         local_ranks: int = 0, sync_initial_state: bool = True,
         sync_timeout: float = SYNC_TIMEOUT, resync: bool = False) -> Membership:
    """Join the mesh, waiting until the node is a training member, and load
    the mesh's checkpoint of the entry step into model and optimizer when
    this node was admitted into a running mesh.

    ``sync_initial_state`` (default True): when the node formed a new mesh
    with others (the answer's ``formed``), every member starts its first
    step from one state, as torch DDP broadcasts rank 0's parameters: the
    member with the lowest peer ID saves its state (model with buffers,
    optimizer, scheduler; ``save``) as the checkpoint of the entry step,
    and every other member fetches it through its node (verified) and
    loads it (``load``; the random number generators stay each host's).
    Without it each host keeps the state it brought, and hosts that did
    not initialize alike train different models. Every member must use the
    same setting. A member that gets no such checkpoint within
    ``sync_timeout`` seconds raises RingmeshError (code ``unavailable``).

    ``start_step`` is the step the model's state is at (0 for a fresh
    model, the current step when training before): a mesh this node forms
    begins there and needs no checkpoint. When no member saved the entry
    step's state in time (code ``unavailable``) the join is retried; after
    ``max_unavailable`` tries the trainer goes on with its own state (a
    warning says so).

    ``resume``: first load the newest checkpoint the node knows (held
    locally or announced in the mesh) when it is past ``start_step``, so a
    mesh restarted as a whole goes on from where it was rather than from
    step 0. ``local_ranks``: how many processes this trainer speaks for
    (see ``DistributedOptimizer``).

    ``resync``: the model's state diverged from the mesh's (a state check
    said so): the node is admitted at a later step as a joiner, also when
    it is at the list's step, and the mesh's checkpoint of that step is
    loaded."""
    directory = checkpoint_dir or default_checkpoint_dir(client)
    dest = os.path.join(directory, "join-state.pt")
    os.makedirs(directory, exist_ok=True)
    resumed = None
    if resume:
        resumed = _resume(model, optimizer, client, start_step, directory, scheduler)
        if resumed is not None:
            start_step = resumed["step"]
    unavailable = 0
    while True:
        want = unavailable < max_unavailable
        try:
            resp = client.join(start_step, timeout=timeout, want_checkpoint=want, dest=dest if want else None,
                               local_ranks=local_ranks, resync=resync)
            break
        except RingmeshError as e:
            if e.code != P.CODE_UNAVAILABLE:
                raise
            unavailable += 1
            log.warning("join: %s (try %d)", e.message, unavailable)
    m = Membership(step=resp.step, members=resp.members, self_id=client.self_id, checkpoint=resp.checkpoint or resumed,
                   share=resp.get("share"), loaded=resumed["path"] if resumed else None, formed=bool(resp.formed),
                   run_id=resp.run_id or "")
    state_step = start_step
    ck = resp.checkpoint
    if ck and ck.get("path") and start_step != m.step and (ck.get("step", 0) == m.step or ck.get("step", 0) > start_step):
        state = load(ck["path"], model, optimizer, scheduler)
        state_step, m.loaded = state["step"], ck["path"]
        m.extra = state.get("extra") or {}
        log.info("loaded checkpoint step=%d root=%s", state_step, ck.get("root", ""))
    if state_step != m.step:
        log.warning("joined at step %d with state of step %d: no checkpoint of the entry step from the mesh",
                    m.step, state_step)
    if sync_initial_state and m.formed and len(m.members) > 1:
        _sync_initial_state(m, model, optimizer, scheduler, client, directory, sync_timeout)
    return m


def _sync_initial_state(m: Membership, model, optimizer, scheduler, client: Client, directory: str,
                        timeout: float) -> None:
    """The first step of a new mesh starts from one state: the member with
    the lowest peer ID saves its own as the checkpoint of the entry step;
    the others wait (up to ``timeout`` seconds) until their node knows it,
    fetch it through the node (every chunk verified against its root) and
    load it (plain tensors only, see ``load``)."""
    source, step = min(m.members), m.step

    def ours(k, local_only):
        # A checkpoint of this run's first step that the source saved: no
        # other member saves one of that step in a run nothing was decided in.
        if k.get("step", 0) != step or k.get("run_id", "") != m.run_id:
            return False
        return bool(k.get("local")) if local_only else (source in (k.get("providers") or []) or bool(k.get("local")))

    dest = os.path.join(directory, "initial-state.pt")
    if source == m.self_id:
        # A trainer of the source that starts again before the first step
        # is decided takes what it saved before: the others may have it.
        held = [k for k in client.checkpoint_list() if ours(k, True)]
        if held:
            r = client.checkpoint_fetch(dest, root=held[0]["root"])
            _load_initial(m, r.checkpoint, model, optimizer, scheduler)
        else:
            resp = save(model, optimizer, step, client, directory, scheduler=scheduler)
            log.info("new mesh of %d members at step %d: this member's state is everyone's start (checkpoint %s)",
                     len(m.members), step, (resp.checkpoint or {}).get("root", ""))
        m.synced_from = source
        return
    t0 = time.monotonic()
    deadline = t0 + timeout
    said, why = False, ""
    while True:
        found = [k for k in client.checkpoint_list() if ours(k, False)]
        if found:
            try:
                r = client.checkpoint_fetch(dest, root=found[0]["root"])
            except RingmeshError as e:
                # The source went away mid-fetch, or served bad chunks: its
                # node may still serve it, or the mesh forms again.
                why = f"; last fetch: {e.code}: {e.message}"
                log.debug("initial state of step %d not fetched: %s", step, e)
            else:
                _load_initial(m, r.checkpoint, model, optimizer, scheduler)
                m.synced_from = source
                return
        now = time.monotonic()
        if now >= deadline:
            raise RingmeshError(
                P.CODE_UNAVAILABLE,
                f"new mesh at step {step}: no state from {_short(source)} within {timeout:g}s{why}. The member with "
                "the lowest peer ID saves the state every member of a new mesh starts from; its trainer failed, is "
                "still loading, or runs with sync_initial_state=False (every member must use the same setting). "
                "Start the trainers again, or pass sync_initial_state=False to all to start from each host's own "
                "state", P.OP_JOIN)
        if not said and now - t0 >= 5:
            log.info("new mesh at step %d: waiting for the initial state from %s", step, _short(source))
            said = True
        time.sleep(0.1)


def _load_initial(m: Membership, ck: Dict[str, Any], model, optimizer, scheduler) -> None:
    state = load(ck["path"], model, optimizer, scheduler, restore_rng=False)
    if state["step"] != m.step:
        raise CheckpointError(ck["path"], f"{ck['path']}: the initial state of the new mesh's step {m.step} holds "
                                          f"step {state['step']}")
    m.checkpoint, m.loaded = ck, ck["path"]
    m._initial_file = ck["path"]  # loaded without the RNG states (DistributedOptimizer's local ranks do alike)
    m.extra = state.get("extra") or {}
    log.info("new mesh of %d members at step %d: loaded the initial state of %s (checkpoint %s)",
             len(m.members), m.step, _short(min(m.members)), ck.get("root", ""))


def _run_epoch(run_id: str) -> int:
    """The epoch of a checkpoint's run ID ("MESH/eEPOCH"); -1 when none."""
    tail = run_id.rpartition("/e")[2]
    return int(tail) if run_id and tail.isdigit() else -1


def _resume(model, optimizer, client: Client, start_step: int, directory: Optional[str],
            scheduler=None) -> Optional[Dict[str, Any]]:
    """Load the newest checkpoint past start_step that can be fetched
    (into ``directory``, default DATA_DIR/trainer); return its description,
    or None."""
    directory = directory or default_checkpoint_dir(client)
    os.makedirs(directory, exist_ok=True)
    dest = os.path.join(directory, "resume-state.pt")
    # Newest run first (a second job on the same nodes starts again at a
    # low step in a later epoch), then newest step.
    newer = sorted((k for k in client.checkpoint_list() if k.get("step", 0) > start_step),
                   key=lambda k: (_run_epoch(k.get("run_id", "")), k.get("step", 0)), reverse=True)
    for k in newer[:3]:
        try:
            r = client.checkpoint_fetch(dest, root=k["root"])
        except RingmeshError as e:
            log.warning("resume: checkpoint of step %d not fetched: %s", k.get("step", 0), e)
            continue
        state = load(r.checkpoint["path"], model, optimizer, scheduler)
        log.info("resumed from checkpoint step=%d root=%s", state["step"], k["root"])
        return dict(r.checkpoint, step=state["step"])
    return None


def _short(peer_id: str) -> str:
    """A peer ID as libp2p's logs (and ringmesh status) print it."""
    return f"<peer.ID {peer_id[:2]}*{peer_id[-6:]}>" if len(peer_id) > 10 else peer_id
