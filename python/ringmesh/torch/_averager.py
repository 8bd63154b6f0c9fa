"""The gradient averager: one shared buffer that the node all-reduces.

This module owns ``GradientAverager`` and the buffer's layout: the
parameters' gradients in ``model.parameters()`` order, then the model's
floating-point buffers (BatchNorm's running statistics), in one
shared-memory buffer the node all-reduces in place. CPU float32 gradients
are bound to their slice of it (``backward()`` accumulates straight into
shared memory); others are copied in (``gather``) and out (``scatter``).
The paths of a step (``_paths``) and ``_overlap`` build on this layout.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ..client import Client, Response


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
