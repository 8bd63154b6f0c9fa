"""A DDP model's gradient buckets go to the mesh while backward still runs.

The step's shared buffer (``GradientAverager``'s flat layout: the
parameters in model order, then the floating-point buffers) is submitted
to the node in parts: ranges of whole parameters from the last one back
(backward makes the last layers' gradients first), each about
``part_bytes``, then the buffers. DDP hands each gradient bucket to the
comm hook when backward finishes it; the hook copies the bucket into the
buffer and marks every part whose parameters are all in (in order: the
node reduces them in turn). ``finish`` (in ``step()``) adds the buffers,
marks what is left and waits for the outcome. The parts do not depend on
DDP's buckets (which DDP rebuilds after its first iteration), only on the
model, so every member cuts its step alike.

The step is still one decision of the mesh: applied on every member with
all its parts, or not at all (then ``step()`` returns False and nothing is
applied, as without overlap).
"""

from __future__ import annotations

import threading
from typing import Any, List, Optional

import torch

from ..client import Response
from ..errors import NodeConnectionLost


class Overlap:
    """The parts of one step's buffer and which of them are in."""

    def __init__(self, averager: Any, part_bytes: int):
        self.av = averager
        params = averager.params
        self.index = {id(p): i for i, p in enumerate(params)}
        self.offsets: List[int] = []
        off = 0
        for p in params:
            self.offsets.append(off)
            off += p.numel()
        # Parts of whole parameters from the last one back, each at least
        # part_bytes (the first may be smaller); then the buffers.
        self.parts: List[tuple] = []
        self.part_of = [0] * len(params)
        self.counts: List[int] = []  # parameters per gradient part
        end, count = averager.grad_elems, 0
        for i in reversed(range(len(params))):
            self.part_of[i] = len(self.parts)
            count += 1
            start = self.offsets[i]
            if 4 * (end - start) >= part_bytes or i == 0:
                self.parts.append((start, end - start))
                self.counts.append(count)
                end, count = start, 0
        self.grad_parts = len(self.parts)
        total = averager.flat.numel()
        if total > averager.grad_elems:
            self.parts.append((averager.grad_elems, total - averager.grad_elems))
        self._lock = threading.Lock()
        # Parts of the last applied step that went to the node while
        # backward still ran (marked from the hook), of len(parts).
        self.last_early = 0
        self.reset()

    def reset(self) -> None:
        """Forget the step (after its outcome, or a failure)."""
        self.step: Optional[int] = None
        self.begun = False
        self.error: Optional[BaseException] = None
        self.left = list(self.counts)
        self.marked = [False] * len(self.av.params)
        self.signaled = 0

    def bucket_done(self, step: Optional[int], weight: Optional[float], params, flat: torch.Tensor) -> None:
        """A bucket's gradients (``flat``: its parameters' in order) for
        ``step``: into the buffer, and the parts now complete marked. With
        ``weight`` unknown (None) the step is submitted at ``finish``.
        Never raises (it runs in DDP's hook): an error waits for
        ``finish``."""
        with self._lock:
            if self.error is not None:
                return
            try:
                self._take(step, params, flat)
                if not self.begun and step is not None and weight is not None:
                    self._begin(step, weight)
                if self.begun:
                    self._signal(self.grad_parts, complete_only=True)
            except BaseException as e:  # noqa: BLE001 -- reported by finish
                self.error = e

    def _take(self, step: Optional[int], params, flat: torch.Tensor) -> None:
        if self.step is None:
            self.step = step
        buf, o = self.av.flat, 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                i = self.index.get(id(p))
                if i is not None and not self.marked[i]:
                    dst = buf[self.offsets[i]:self.offsets[i] + n]
                    if dst.data_ptr() != flat[o:o + n].data_ptr():
                        dst.copy_(flat[o:o + n])
                    self.marked[i] = True
                    self.left[self.part_of[i]] -= 1
                o += n

    def _begin(self, step: int, weight: float) -> None:
        self.av.buffer.allreduce_parts(step, self.parts, reduce="wmean", weight=weight, wire=self.av.wire)
        self.step, self.begun = step, True

    def _signal(self, upto: int, complete_only: bool = False) -> None:
        """Mark parts ready in order, up to ``upto`` (only complete ones
        with complete_only)."""
        while self.signaled < upto and (not complete_only or self.left[self.signaled] == 0):
            self.av.buffer.part_ready(self.step, self.signaled)
            self.signaled += 1

    def finish(self, step: int, weight: float, gather: bool) -> Response:
        """Mark every part (gradients no bucket brought: from ``p.grad`` with
        ``gather``, else an error), submit the step if no bucket did, and
        wait for the outcome. The buffers must be in place already."""
        with self._lock:
            try:
                if isinstance(self.error, NodeConnectionLost):
                    raise self.error
                missing = [i for i, m in enumerate(self.marked) if not m]
                if missing and not gather:
                    raise RuntimeError(f"DDP handed {len(missing)} of {len(self.marked)} gradients to no comm "
                                       "hook call: the local ranks' mean of those is unknown")
                with torch.no_grad():
                    for i in missing:
                        p, v = self.av.params[i], self.av.views[i]
                        if p.grad is None:
                            v.zero_()
                        elif p.grad.data_ptr() != v.data_ptr():
                            v.copy_(p.grad)
                        self.marked[i] = True
                early = self.signaled
                if self.error is None and not self.begun:
                    self._begin(step, weight)
                if self.begun:
                    if self.error is None:
                        self._signal(len(self.parts))
                    resp = self.av.buffer.wait(step)  # the node's outcome, also after a refused mark
                if self.error is not None:
                    raise self.error
                self.last_early = early
                return resp
            finally:
                self.reset()
