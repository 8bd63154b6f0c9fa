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
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import logging
import os
import pickle
import random
import re
import stat
import sys
import tempfile
import time
import weakref
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .. import protocol as P
from ..client import Client, Response
from ..errors import CheckpointError, NodeConnectionLost, RingmeshConnectionError, RingmeshError

log = logging.getLogger("ringmesh.torch")

# /2: floats stored as strings (see _plain) so that torch.load(weights_only=True)
# of torch 1.13 reads the file; /1 (raw floats) still loads where torch can.
CHECKPOINT_FORMAT = "ringmesh.torch/2"
_FORMAT_V1 = "ringmesh.torch/1"
_FORMATS = (CHECKPOINT_FORMAT, _FORMAT_V1)


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


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module a DistributedDataParallel wraps (its state dict has no
    ``module.`` prefix, so checkpoints load with or without the wrapper)."""
    ddp = torch.nn.parallel.DistributedDataParallel
    return model.module if isinstance(model, ddp) else model


def save(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer], step: int, client: Client,
         directory: Optional[str] = None, extra: Optional[Dict[str, Any]] = None, keep: int = 2,
         scheduler: Optional[Any] = None) -> Response:
    """Write the state at ``step`` (model state dict with its buffers,
    optimizer and LR ``scheduler`` state dicts, the random number
    generators' states, the step, which is the data position of a
    step-indexed global batch, and ``extra``) with ``torch.save`` and hand
    the file to the node, which stores, announces and serves it to joiners.
    Files go to ``directory`` (default DATA_DIR/trainer).

    The file holds plain data only, so that ``load`` can read it without
    unpickling code (``torch.load(weights_only=True)``): tensors, ints,
    bools, None, strings, floats, lists, tuples and dicts (tuple/list/dict
    subclasses are stored as the plain container, OrderedDicts stay
    OrderedDicts). Anything else in ``extra`` (or in a state dict) raises
    TypeError before anything is written.

    Only once the node took the new file (it answered ok; an error answer
    raises RingmeshError) are older ``step-*.pt`` files in ``directory``
    removed: the newest ``keep`` stay (by modification time, then step),
    always counting the one just saved, which is never removed. ``keep`` <= 0
    removes nothing."""
    directory = directory or default_checkpoint_dir(client)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"step-{step:012d}.pt")
    state = _plain({"format": CHECKPOINT_FORMAT, "step": int(step), "model": _unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict() if optimizer is not None else None,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": _rng_state(), "extra": extra or {}}, ())
    fd, tmp = tempfile.mkstemp(prefix=".step-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    resp = client.checkpoint_save(path, step)
    if not resp.ok:  # Client raises for error answers; never take one for a save
        raise RingmeshError(resp.code or P.CODE_INTERNAL, resp.error or "checkpoint not saved",
                            P.OP_CHECKPOINT_SAVE, resp)
    _prune(directory, path, keep)
    return resp


_STEP_FILE = re.compile(r"step-(\d+)\.pt")


def _prune(directory: str, saved: str, keep: int) -> None:
    """Remove the ``step-*.pt`` files of ``directory`` but the newest
    ``keep`` (by mtime, then the step in the name), ``saved`` always being
    one of those kept and never removed."""
    if keep <= 0:
        return
    saved = os.path.realpath(saved)
    others = []
    for name in os.listdir(directory):
        m = _STEP_FILE.fullmatch(name)
        if not m:
            continue
        p = os.path.join(directory, name)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or os.path.realpath(p) == saved:
            continue
        others.append((st.st_mtime_ns, int(m.group(1)), p))
    others.sort(reverse=True)
    for _, _, p in others[keep - 1:]:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("old checkpoint %s not removed: %s", p, e)


# Floats are stored as {_FLOAT: float.hex()}: the weights_only unpickler of
# torch 1.13 has no float opcode. A dict of the saved data may not use the key.
_FLOAT = "__ringmesh_float__"
_SAFE_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _where(path) -> str:
    return "state" + "".join(f"[{k!r}]" for k in path)


def _plain_key(k, path):
    if k is None or type(k) in (str, int, bool):
        return k
    if isinstance(k, bool):
        return bool(k)
    if isinstance(k, int):
        return int(k)
    if isinstance(k, str):
        return str(k)
    if isinstance(k, tuple):
        return tuple(_plain_key(x, path) for x in k)
    raise TypeError(f"ringmesh.torch.save: key {k!r} of {_where(path)} is a {type(k).__module__}.{type(k).__qualname__}: "
                    "checkpoint dict keys must be str, int, bool, None or tuples of those")


def _plain(x, path, active=None):
    """``x`` as plain checkpoint data (see ``save``); TypeError names what
    cannot be."""
    if x is None or type(x) in (str, int, bool) or type(x) is torch.Size:
        return x
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return {_FLOAT: float(x).hex()}
    if isinstance(x, str):
        return str(x)
    if isinstance(x, torch.Tensor):
        if x.is_quantized:
            raise TypeError(f"ringmesh.torch.save: {_where(path)} is a quantized tensor: not stored in a "
                            "plain-tensor checkpoint")
        t = x.detach()
        if type(t) not in _SAFE_TENSOR_TYPES:
            t = t.as_subclass(torch.Tensor)
        if getattr(t, "__dict__", None):
            t = t.view_as(t)  # a plain tensor sharing the data, without Python attributes
        return t
    if isinstance(x, (dict, list, tuple)):
        active = set() if active is None else active
        if id(x) in active:
            raise ValueError(f"ringmesh.torch.save: {_where(path)} contains itself")
        active.add(id(x))
        try:
            if isinstance(x, dict):
                out = collections.OrderedDict() if isinstance(x, collections.OrderedDict) else {}
                for k, v in x.items():
                    if isinstance(k, str) and k == _FLOAT:
                        raise ValueError(f"ringmesh.torch.save: {_where(path)} uses the reserved key {_FLOAT!r}")
                    out[_plain_key(k, path)] = _plain(v, path + (k,), active)
                if isinstance(out, collections.OrderedDict):
                    for k, v in vars(x).items():  # _metadata of module state dicts
                        setattr(out, k, _plain(v, path + (k,), active))
                return out
            items = [_plain(v, path + (i,), active) for i, v in enumerate(x)]
            return tuple(items) if isinstance(x, tuple) else items
        finally:
            active.discard(id(x))
    raise TypeError(f"ringmesh.torch.save: {_where(path)} is a {type(x).__module__}.{type(x).__qualname__}: a "
                    "checkpoint holds only tensors, numbers, strings, None, lists, tuples and dicts")


def _unplain(x, seen):
    """Undo ``_plain`` in place (floats back from their tags)."""
    t = type(x)
    if t is dict and len(x) == 1 and _FLOAT in x:
        v = x[_FLOAT]
        if type(v) is not str:
            raise ValueError(f"bad float {v!r}")
        return float.fromhex(v)
    if t in (dict, collections.OrderedDict, list):
        if id(x) in seen:
            return x
        seen.add(id(x))
        for k in (list(x) if t is not list else range(len(x))):
            x[k] = _unplain(x[k], seen)
        if t is collections.OrderedDict:
            for k, v in vars(x).items():
                setattr(x, k, _unplain(v, seen))
        return x
    if t is tuple:
        return tuple(_unplain(v, seen) for v in x)
    return x


def _safe_torch_load(path: str) -> Any:
    """``torch.load`` of ``path`` that unpickles plain data only
    (``weights_only=True``): a file needing anything else raises
    CheckpointError, with nothing in it run."""
    try:
        safe = "weights_only" in inspect.signature(torch.load).parameters
    except (TypeError, ValueError):
        safe = False
    if not safe:
        raise RuntimeError(
            f"ringmesh.torch.load: torch {torch.__version__} has no torch.load(weights_only=True); refusing to "
            f"load {path} with plain pickle, which runs whatever the file says: use torch 1.13 or newer")

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(path, f"{path} is not a plain-tensor checkpoint ({why}); refused, nothing in it "
                                     "was run: ringmesh loads only tensors, numbers, strings, lists, tuples and dicts")

    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise refuse("not a torch.save zip archive")
        f.seek(0)
        try:
            if _is_torchscript(f):
                raise refuse("a TorchScript archive")
            f.seek(0)
            return torch.load(f, map_location="cpu", weights_only=True)
        except CheckpointError:
            raise
        except Exception as e:  # UnpicklingError, and whatever a malformed archive raises
            msg = str(e)
            msg = msg.split("WeightsUnpickler error: ", 1)[-1] or type(e).__name__
            if msg == f"Unsupported operand {pickle.BINFLOAT[0]}":
                msg += (": a raw float, as in checkpoints of format ringmesh.torch/1, which load only with a torch "
                        "whose weights_only unpickler reads floats")
            raise refuse(msg) from None


def _is_torchscript(f) -> bool:
    """Whether the zip archive ``f`` is a TorchScript one (which torch.load
    would hand to torch.jit.load)."""
    ser = torch.serialization
    if hasattr(ser, "_open_zipfile_reader") and hasattr(ser, "_is_torchscript_zip"):
        with ser._open_zipfile_reader(f) as z:
            return bool(ser._is_torchscript_zip(z))
    with zipfile.ZipFile(f) as z:
        return any(n.split("/", 1)[-1] == "constants.pkl" for n in z.namelist())


def load(path: str, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
         scheduler: Optional[Any] = None, restore_rng: bool = True) -> Dict[str, Any]:
    """Load a checkpoint written by ``save`` into model (and optimizer and
    LR scheduler), set the random number generators to the saved states
    (``restore_rng``), and return the whole saved dict (``step``,
    ``extra``).

    The file is unpickled with ``torch.load(weights_only=True)``: plain
    tensors and containers only, no code. Anything else (a poisoned
    checkpoint from the mesh, a file of another kind) raises
    CheckpointError naming the file; a torch without ``weights_only``
    raises RuntimeError rather than unpickling with plain pickle."""
    state = _safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") not in _FORMATS:
        raise CheckpointError(path, f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if state["format"] != _FORMAT_V1:
        try:
            state = _unplain(state, set())
        except Exception as e:  # a malformed float tag, a structure nested too deep
            raise CheckpointError(path, f"{path} is not a plain-tensor checkpoint ({type(e).__name__}: {e})") from None
    step, sd, osd, extra = state.get("step"), state.get("model"), state.get("optimizer"), state.get("extra")
    if (type(step) is not int or not isinstance(sd, dict) or not (osd is None or isinstance(osd, dict))
            or not (extra is None or isinstance(extra, dict))):
        raise CheckpointError(path, f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (step, model, optimizer or "
                                    "extra of the wrong type)")
    ssd, rng = state.get("scheduler"), state.get("rng")
    if not (ssd is None or isinstance(ssd, dict)) or not (rng is None or isinstance(rng, dict)):
        raise CheckpointError(path, f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (scheduler or rng of the wrong type)")
    _unwrap(model).load_state_dict(sd)
    if optimizer is not None and osd is not None:
        optimizer.load_state_dict(osd)
    if scheduler is not None and ssd is not None:
        scheduler.load_state_dict(ssd)
    if restore_rng and rng:
        try:
            _set_rng_state(rng)
        except (TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(path, f"{path}: random number generator state not restored ({e})") from None
    return state


def _rng_state() -> Dict[str, Any]:
    """The random number generators' states, as plain data."""
    v, internal, gauss = random.getstate()
    out: Dict[str, Any] = {"torch": torch.get_rng_state(), "python": [v, list(internal), gauss]}
    if torch.cuda.is_available():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def _set_rng_state(rng: Dict[str, Any]) -> None:
    if isinstance(rng.get("torch"), torch.Tensor):
        torch.set_rng_state(rng["torch"])
    py = rng.get("python")
    if isinstance(py, (list, tuple)) and len(py) == 3:
        random.setstate((int(py[0]), tuple(int(x) for x in py[1]), py[2]))
    cuda = rng.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def default_checkpoint_dir(client: Client) -> str:
    """Where the helpers write checkpoint files: DATA_DIR/trainer."""
    return os.path.join(client.data_dir, "trainer")


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


# A fingerprint's sample of each tensor: this many elements, evenly strided.
_HASH_SAMPLES = 64
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def state_hash(tensors) -> str:
    """A cheap, exact fingerprint of ``tensors`` (a model's parameters and
    buffers): sha256 over each tensor's shape and dtype, the sum of its
    elements' bit patterns as integers (exact and independent of the order
    of summation, so the same bits give the same sum on any device) and a
    strided sample of its elements' bits; 32 hex characters. Computed where
    the tensors are (one small copy to the CPU per device, never the whole
    model)."""
    h = hashlib.sha256()
    per_device: Dict[Any, List[torch.Tensor]] = {}
    with torch.no_grad():
        for t in tensors:
            t = t.detach()
            if t.is_complex():
                t = torch.view_as_real(t)
            h.update(f"{tuple(t.shape)}:{t.dtype};".encode())
            if t.numel() == 0:
                continue
            flat = t.reshape(-1)
            if flat.dtype == torch.bool:
                bits = flat.to(torch.uint8)
            else:
                it = _INT_OF_SIZE.get(flat.element_size())
                bits = flat.view(it) if it is not None else flat.contiguous().view(torch.uint8)
            stride = max(1, bits.numel() // _HASH_SAMPLES)
            out = per_device.setdefault(t.device, [])
            out.append(bits.sum(dtype=torch.int64).reshape(1))
            out.append(bits[::stride][:_HASH_SAMPLES].to(torch.int64))
        for dev in sorted(per_device, key=str):
            h.update(torch.cat(per_device[dev]).cpu().numpy().tobytes())
    return h.hexdigest()[:32]


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


# The DistributedOptimizers alive in this process: a DistributedSampler
# given none uses the one there is.
_OPTIMIZERS: "weakref.WeakSet" = weakref.WeakSet()


def _the_optimizer() -> "DistributedOptimizer":
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


class _Progress:
    """What one progress interval saw (see DistributedOptimizer)."""

    def __init__(self):
        self.reset(time.monotonic())

    def reset(self, now: float) -> None:
        self.t0 = now
        self.steps = 0
        self.samples = 0.0
        self.wait = 0.0
        self.rejoins = 0
        self.mesh_samples = 0.0


class GradientAverager:
    """Averages a model's gradients across the mesh through one shared
    buffer (see the module doc for the layout and the zero-copy binding)."""

    def __init__(self, model: torch.nn.Module, client: Optional[Client], wire: Optional[str] = None,
                 bind_grads: bool = True, sync_buffers: bool = True):
        # Without a client (a local rank other than 0) the buffer is a plain
        # tensor of the same layout, which local rank 0's result fills.
        self.client = client
        self.wire = wire
        self.bind_grads = bind_grads
        seen = set()
        self.params: List[torch.nn.Parameter] = []
        for p in model.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                self.params.append(p)
        # Floating-point buffers (BatchNorm's running statistics) ride in
        # the same round after the gradients, averaged with the same
        # weights, so every member holds the same buffers after every step.
        self.buffers: List[torch.Tensor] = []
        if sync_buffers:
            for b in model.buffers():
                if b.is_floating_point() and id(b) not in seen:
                    seen.add(id(b))
                    self.buffers.append(b)
        self.grad_elems = sum(p.numel() for p in self.params)
        total = self.grad_elems + sum(b.numel() for b in self.buffers)
        self.buffer = client.shared_buffer(total) if client is not None else None
        flat = self.buffer.tensor() if self.buffer is not None else torch.zeros(total)
        self.flat = flat
        self.views: List[torch.Tensor] = []
        off = 0
        for p in self.params:
            self.views.append(flat[off:off + p.numel()].view(p.shape))
            off += p.numel()
        self.buffer_views: List[torch.Tensor] = []
        for b in self.buffers:
            self.buffer_views.append(flat[off:off + b.numel()].view(b.shape))
            off += b.numel()

    def _bindable(self, p: torch.Tensor) -> bool:
        return self.bind_grads and p.device.type == "cpu" and p.dtype == torch.float32

    def average(self, step: int, weight: float, reduce: str = "wmean") -> Response:
        """All-reduce the gradients for ``step`` with the mean weighted by
        ``weight`` (this member's sample count) and leave the result in each
        ``p.grad``, and the floating-point buffers (BatchNorm's running
        statistics) averaged the same way in place. A parameter without a
        gradient contributes zeros. Raises RingmeshError (gradients and
        buffers untouched) when the round fails."""
        with torch.no_grad():
            self.gather()
            resp = self.mesh(step, weight, reduce)
            self.scatter()
        return resp

    def gather(self) -> None:
        """Gradients and buffers into the flat buffer."""
        with torch.no_grad():
            for p, v in zip(self.params, self.views):
                if p.grad is None:
                    v.zero_()
                elif p.grad.data_ptr() != v.data_ptr():
                    v.copy_(p.grad)
            self.gather_buffers()

    def gather_buffers(self) -> None:
        """The buffers alone into the flat buffer (the gradients came in
        DDP's buckets)."""
        with torch.no_grad():
            for b, v in zip(self.buffers, self.buffer_views):
                v.copy_(b)

    def mesh(self, step: int, weight: float, reduce: str = "wmean") -> Response:
        """All-reduce the flat buffer across the mesh, in place."""
        return self.buffer.allreduce(step, reduce=reduce, weight=weight, wire=self.wire)

    def scatter(self) -> None:
        """The flat buffer's values into the gradients and buffers."""
        with torch.no_grad():
            for b, v in zip(self.buffers, self.buffer_views):
                b.copy_(v)
            for p, v in zip(self.params, self.views):
                if p.grad is not None and p.grad.data_ptr() == v.data_ptr():
                    continue
                if self._bindable(p):
                    p.grad = v
                elif p.grad is None:
                    p.grad = v.to(device=p.device, dtype=p.dtype, copy=True)
                else:
                    p.grad.copy_(v)

    def close(self) -> None:
        """Unbind the gradients from shared memory and free the buffer."""
        for p, v in zip(self.params, self.views):
            if p.grad is not None and p.grad.data_ptr() == v.data_ptr():
                p.grad = p.grad.clone()
        self.views, self.buffer_views = [], []
        if self.buffer is not None:
            self.buffer.close()


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
        if self.lead and client is None:
            data_dir = os.environ.get("RINGMESH_DATA_DIR")
            if not data_dir:
                raise ValueError("no client: pass client=ringmesh.Client(data_dir) or set RINGMESH_DATA_DIR to the "
                                 "local node's data dir")
            client = Client(data_dir)
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
        self._hooked = False
        self._warned_weights = False
        self._buf_snap: Optional[List[torch.Tensor]] = None
        self._overlap = None
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
        self._progress = _Progress()
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            self._attach_ddp(model)
        else:
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
        """Take over a DDP model: its comm hook weights the local ranks
        and hands the buckets to the mesh (overlap)."""
        self.model = model
        if self._overlap_wanted and self.averager.grad_elems > 0:
            from ._overlap import Overlap
            self._overlap = Overlap(self.averager, self._part_bytes)
        if self.local is not None or self._overlap is not None:
            try:
                model.register_comm_hook(self, _mesh_hook)
                self._hooked = True
            except RuntimeError as e:  # the program registered its own hook
                self._overlap = None
                log.warning("DDP comm hook not registered (%s): no overlap with the mesh, and local ranks' gradients "
                            "are averaged with equal weights", e)
        if self._overlap is not None and self.lead:
            # With overlap, .grad must not be the node's buffer: DDP copies
            # each bucket's hook result (this host's gradients) into .grad
            # when backward ends, and once the hook marked the last part the
            # node may already have written the mesh's result there; that
            # copy would overwrite it. The result is copied into .grad after
            # the round (scatter) instead.
            self.averager.bind_grads = False
            with torch.no_grad():
                for p, v in zip(self.averager.params, self.averager.views):
                    if p.grad is not None and p.grad.data_ptr() == v.data_ptr():
                        p.grad = p.grad.clone()

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
        ov = self._overlap
        return (0, 0) if ov is None else (ov.last_early, len(ov.parts))

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
        if self.local is None:
            return batch_size, batch_size
        host = self.local.total(batch_size)
        if self._hooked and not self._warned_weights and abs(batch_size * self.local_size - host) > 1e-9:
            self._warned_weights = True
            log.warning("local ranks' batches differ in size and DDP averaged their gradients with equal weights: "
                        "cut the batches with ringmesh.torch.DistributedSampler to weight them by samples")
        return batch_size, host

    def _local_weight(self) -> float:
        """The DDP hook's factor: this rank's samples over the host's mean."""
        b = self._batch
        if b is None or self.membership is None or b[0] != self.membership.step or b[2] <= 0:
            return 1.0
        return b[1] * self.local_size / b[2]

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
        if self.local is None and self._overlap is not None:
            outcome = self._mesh_round(lambda: self._overlap_round(host, gather=True))
        elif self.local is None:
            outcome = self._mesh_round(lambda: self.averager.average(self.membership.step, host))
        else:
            outcome = self._sync_local(n, host)
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

    def _overlap_round(self, host: float, gather: bool) -> Response:
        """The step whose buckets went to the node during backward: the
        buffers and what is left, then the outcome (the result in place in
        the gradients on success)."""
        av = self.averager
        if self.local is None:
            av.gather_buffers()
        resp = self._overlap.finish(self.membership.step, host, gather)
        if self.local is None:
            av.scatter()
        return resp

    def _hook_weight(self) -> Optional[float]:
        """The host's samples for the open step when known without a
        collective (a DistributedSampler cut it), else None."""
        b, m = self._batch, self.membership
        if b is None or m is None or b[0] != m.step:
            return None
        return b[2]

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

    def _sync_local(self, n: float, host: float) -> Dict[str, Any]:
        """The host's weighted mean over the local ranks, rank 0's round
        with the mesh, and its outcome and result on every local rank."""
        av = self.averager
        ov = self._overlap
        with torch.no_grad():
            if ov is not None and self.lead:
                av.gather_buffers()  # rank 0's buckets are in the flat buffer (and on their way to the mesh)
            else:
                av.gather()
            # With the DDP hook the gradients are the host's weighted mean
            # already; the buffers (and a plain model's gradients) are not.
            part = av.flat[av.grad_elems:] if self._hooked else av.flat
            if part.numel():
                if n > 0 and host > 0:
                    part.mul_(n / host)
                else:
                    part.zero_()
                self.local.all_reduce(part)
        err = None
        outcome: Dict[str, Any] = {}
        if self.lead:
            try:
                if ov is not None:
                    outcome = self._mesh_round(lambda: self._overlap_round(host, gather=False))
                else:
                    outcome = self._mesh_round(lambda: av.mesh(self.membership.step, host))
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
        self._count_progress(resp)
        return not self._check_state(resp)

    def _count_progress(self, resp: Response) -> None:
        """Count an applied step; every ``progress_every`` seconds (or
        ``progress_steps`` steps) local rank 0 logs a progress line at INFO:
        the step, samples/s of the mesh and of this host, and how long the
        trainer waited for the mesh in the interval (naming the member the
        mesh's plan measures slowest when the wait was a large part)."""
        pr = self._progress
        pr.steps += 1
        pr.samples += float(getattr(self, "_pending_samples", 0) or 0)
        pr.mesh_samples += float(resp.total_weight or 0)
        now = time.monotonic()
        by_time = self.progress_every > 0 and now - pr.t0 >= self.progress_every
        by_steps = self.progress_steps > 0 and pr.steps >= self.progress_steps
        if not (by_time or by_steps):
            return
        if self.lead and log.isEnabledFor(logging.INFO):
            log.info("%s", self._progress_line(resp, now))
        pr.reset(now)

    def _progress_line(self, resp: Response, now: float) -> str:
        pr = self._progress
        dt = max(now - pr.t0, 1e-9)
        line = (f"step {resp.next_step - 1}: {pr.steps} steps in {dt:.1f}s, "
                f"{pr.mesh_samples / dt:.0f} samples/s in the mesh "
                f"({pr.samples / dt:.0f} on this host), {len(resp.members or [])} members; "
                f"waited {pr.wait:.1f}s ({100 * pr.wait / dt:.0f}%) for the mesh")
        if pr.rejoins:
            line += f"; {pr.rejoins} rejoins"
        if pr.wait >= 0.2 * dt:
            slow = self._slowest_member()
            if slow:
                line += f", slowest member {slow}"
        return line

    def _slowest_member(self) -> str:
        """The other member with the fewest samples/s per share of the
        batch in the node's plan ("" when the node cannot say)."""
        try:
            st = self.client.status() or {}
        except (RingmeshError, RingmeshConnectionError) as e:
            log.debug("status for the progress line: %s", e)
            return ""
        if not isinstance(st, dict):
            st = dict(st)
        st = st.get("status", st) or {}
        me = self.client.self_id
        worst = None
        for p in (st.get("rounds") or {}).get("plan") or []:
            rate = float(p.get("samples_per_s") or 0)
            if p.get("id") == me or rate <= 0:
                continue
            if worst is None or rate < worst[0]:
                worst = (rate, p["id"])
        return f"{_short(worst[1])} ({worst[0]:.0f} samples/s)" if worst else ""

    def _check_state(self, resp: Response) -> bool:
        """The state check after an applied step: report this host's state
        hash when ``next_step`` is a multiple of ``check_every``, and
        re-sync from the mesh when the node says the state diverged (in
        this answer or the all-reduce's). Returns whether it re-synced."""
        verdict = resp.get("state_check")
        if self.check_every > 0 and resp.next_step % self.check_every == 0:
            answer = None
            if self.lead:
                try:
                    answer = self.client.state_hash(resp.next_step, self.state_hash()).get("state_check")
                except (RingmeshError, RingmeshConnectionError) as e:
                    log.warning("state hash of step %d not reported to the node: %s", resp.next_step, e)
            if self.local is not None:
                answer = self.local.bcast_json(answer)
            if answer is not None:
                self.state_check = answer
                if not (verdict and verdict.get("diverged")):
                    verdict = answer
        if not (verdict and verdict.get("diverged")) or int(verdict.get("step", 0)) < self._resynced_at:
            return False
        self._resync(verdict)
        return True

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

    def _resync(self, verdict: Dict[str, Any]) -> None:
        """This host's state diverged from the mesh's: join again as a
        joiner and load the mesh's checkpoint of the entry step."""
        if self.lead:
            log.error("state check: this host's model state at step %d differs from the mesh's: %d of %d reporting "
                      "members hold it (hash %s, the majority's %s); re-syncing from the mesh rather than training on",
                      verdict.get("step", 0), verdict.get("agree", 0), verdict.get("reporting", 0),
                      verdict.get("hash", ""), verdict.get("majority", ""))
        self.resyncs += 1
        self.rejoins += 1
        self.join(resync=True)
        m = self.membership
        self._resynced_at = m.step
        if self.lead:
            ck = m.checkpoint or {}
            if m.loaded:
                log.error("state check: re-synced from the mesh's checkpoint of step %d (root %s); training goes on "
                          "at step %d", ck.get("step", m.step), ck.get("root", ""), m.step)
            else:
                log.error("state check: joined again at step %d but got no checkpoint of the mesh's state: this host "
                          "still holds its diverged state", m.step)

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


def _mesh_hook(opt: DistributedOptimizer, bucket):
    """DDP comm hook. With local ranks: the bucket's gradients weighted by
    this rank's samples, summed over the local ranks (the host's weighted
    mean). With overlap, local rank 0 (or the single process) then hands
    the host's bucket to the mesh while backward goes on."""
    t = bucket.buffer()
    ov = opt._overlap if opt.lead else None
    params = list(bucket.parameters()) if ov is not None else None
    step = opt.membership.step if opt.membership is not None else None
    if opt.local is None:
        if ov is not None:
            ov.bucket_done(step, opt._hook_weight(), params, t)
        fut = torch.futures.Future()
        fut.set_result(t)
        return fut
    w = opt._local_weight() / opt.local_size
    if w == 0:
        t.zero_()
    else:
        t.mul_(w)
    fut = torch.distributed.all_reduce(t, group=opt.local.group, async_op=True).get_future()

    def done(f):
        v = f.value()[0]
        if ov is not None:
            ov.bucket_done(step, opt._hook_weight(), params, v)
        return v
    return fut.then(done)


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
