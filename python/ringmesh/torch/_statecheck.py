"""State checks: whether the members still hold one model.

This module owns ``state_hash``, the fingerprint of a model's state that
the members compare through their nodes (PROTOCOL.md, "State checks"),
and what a ``DistributedOptimizer`` does with it after an applied step
(``check_state``): report this host's fingerprint every ``check_every``
steps, and re-sync from the mesh's checkpoint when the node says this
host's state diverged from the majority's.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, List

import torch

from ..client import Response
from ..errors import RingmeshConnectionError, RingmeshError

log = logging.getLogger("ringmesh.torch")


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


def check_state(opt: Any, resp: Response) -> bool:
    """The state check after an applied step: report this host's state
    hash when ``next_step`` is a multiple of ``check_every``, and
    re-sync from the mesh when the node says the state diverged (in
    this answer or the all-reduce's). Returns whether it re-synced."""
    verdict = resp.get("state_check")
    if opt.check_every > 0 and resp.next_step % opt.check_every == 0:
        answer = None
        if opt.lead:
            try:
                answer = opt.client.state_hash(resp.next_step, opt.state_hash()).get("state_check")
            except (RingmeshError, RingmeshConnectionError) as e:
                log.warning("state hash of step %d not reported to the node: %s", resp.next_step, e)
        if opt.local is not None:
            answer = opt.local.bcast_json(answer)
        if answer is not None:
            opt.state_check = answer
            if not (verdict and verdict.get("diverged")):
                verdict = answer
    if not (verdict and verdict.get("diverged")) or int(verdict.get("step", 0)) < opt._resynced_at:
        return False
    _resync(opt, verdict)
    return True


def _resync(opt: Any, verdict: Dict[str, Any]) -> None:
    """This host's state diverged from the mesh's: join again as a
    joiner and load the mesh's checkpoint of the entry step."""
    if opt.lead:
        log.error("state check: this host's model state at step %d differs from the mesh's: %d of %d reporting "
                  "members hold it (hash %s, the majority's %s); re-syncing from the mesh rather than training on",
                  verdict.get("step", 0), verdict.get("agree", 0), verdict.get("reporting", 0),
                  verdict.get("hash", ""), verdict.get("majority", ""))
    opt.resyncs += 1
    opt.rejoins += 1
    opt.join(resync=True)
    m = opt.membership
    opt._resynced_at = m.step
    if opt.lead:
        ck = m.checkpoint or {}
        if m.loaded:
            log.error("state check: re-synced from the mesh's checkpoint of step %d (root %s); training goes on "
                      "at step %d", ck.get("step", m.step), ck.get("root", ""), m.step)
        else:
            log.error("state check: joined again at step %d but got no checkpoint of the mesh's state: this host "
                      "still holds its diverged state", m.step)
