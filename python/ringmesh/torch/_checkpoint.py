"""A trainer's state as a file: checkpoints and their safe loading.

This module owns the checkpoint format: ``save`` writes the model,
optimizer, LR scheduler and random number generators' states as plain data
(tensors, numbers, strings and containers; floats tagged as strings so that
torch 1.13's ``weights_only`` unpickler reads them) and hands the file to
the node, pruning older files; ``load`` reads one back with
``torch.load(weights_only=True)``, refusing (``CheckpointError``) anything
that would run code.
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
import pickle
import random
import re
import stat
import tempfile
import zipfile
from typing import Any, Dict, Optional

import torch

from .. import protocol as P
from ..client import Client, Response
from ..errors import CheckpointError, RingmeshError

log = logging.getLogger("ringmesh.torch")

# /2: floats stored as strings (see _plain) so that torch.load(weights_only=True)
# of torch 1.13 reads the file; /1 (raw floats) still loads where torch can.
CHECKPOINT_FORMAT = "ringmesh.torch/2"
_FORMAT_V1 = "ringmesh.torch/1"
_FORMATS = (CHECKPOINT_FORMAT, _FORMAT_V1)


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
