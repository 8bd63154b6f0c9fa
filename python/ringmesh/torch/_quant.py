"""The node's block-quantized wire formats, as torch code, for error feedback.

DiLoCo's error feedback needs to know what quantizing its pseudo-gradient
drops. These are the node's int8 and float4 (E2M1) formats (allreduce's
quant.go): blocks of 64 elements, each with a float32 scale (the block's
largest magnitude over the largest code value), values rounded to the
nearest code, ties to the even code. Blocks here count from the start of
each parameter; the node's count from the start of each chunk, so the two
agree on most blocks, and error feedback only needs the residual to stay
small, not to match the wire bit for bit.
"""

from __future__ import annotations

from typing import Optional

import torch

BLOCK = 64

# E2M1 magnitudes, code 0..7.
_E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
_E2M1_MID = (_E2M1[1:] + _E2M1[:-1]) / 2


class Quantizer:
    """Q(x): x quantized and decoded again, in float32."""

    def __init__(self, qmax: float):
        self.qmax = qmax

    @staticmethod
    def for_wire(wire: Optional[str]) -> Optional["Quantizer"]:
        """The quantizer of a wire format name; None for an exact or
        element-wise one (float32, bfloat16, float16)."""
        w = (wire or "float32").lower()
        if w in ("int8", "i8"):
            return _Int8()
        if w in ("float4", "fp4", "e2m1"):
            return _Float4()
        return None

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().reshape(-1).to(torch.float32)
        n = flat.numel()
        pad = (-n) % BLOCK
        blocks = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, BLOCK)
        amax = blocks.abs().amax(dim=1, keepdim=True)
        scale = amax / self.qmax
        # A block under qmax * 2^-126 is sent as zeros (no subnormal scale).
        tiny = amax < self.qmax * 2.0 ** -126
        safe = torch.where(tiny, torch.ones_like(scale), scale)
        q = self._codes(blocks / safe) * safe
        q = torch.where(tiny, torch.zeros_like(q), q)
        return q.reshape(-1)[:n].reshape(x.shape).to(x.dtype)

    def _codes(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _Int8(Quantizer):
    def __init__(self):
        super().__init__(127.0)

    def _codes(self, v):
        return torch.round(v).clamp_(-127, 127)  # torch.round: ties to even


class _Float4(Quantizer):
    def __init__(self):
        super().__init__(6.0)

    def _codes(self, v):
        mag = v.abs()
        code = torch.bucketize(mag, _E2M1_MID)  # a tie takes the lower code
        tie = (code < len(_E2M1_MID)) & (mag == _E2M1_MID[code.clamp(max=len(_E2M1_MID) - 1)])
        code = torch.where(tie & (code % 2 == 1), code + 1, code)
        return _E2M1[code] * torch.sign(v)
