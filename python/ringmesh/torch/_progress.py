"""The trainer's progress lines.

This module owns ``Progress``: what one interval of training saw (steps,
this host's and the mesh's samples, the time spent waiting for the mesh,
rejoins) and the line local rank 0 logs at INFO at the end of each
interval, naming the slowest member when the wait was a large part of it
(``DistributedOptimizer(progress_every=, progress_steps=)``).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from ..client import Client, Response
from ..errors import RingmeshConnectionError, RingmeshError
from ._membership import _short

log = logging.getLogger("ringmesh.torch")


class Progress:
    """What one progress interval saw (see DistributedOptimizer). The
    optimizer adds its wait for the mesh (``wait``) and its rejoins
    (``rejoins``); ``count`` the applied steps."""

    def __init__(self):
        self.reset(time.monotonic())

    def reset(self, now: float) -> None:
        self.t0 = now
        self.steps = 0
        self.samples = 0.0
        self.wait = 0.0
        self.rejoins = 0
        self.mesh_samples = 0.0

    def count(self, resp: Response, samples: float, every: float, steps: int, client: Optional[Client]) -> None:
        """Count an applied step (``samples``: this host's); every
        ``every`` seconds (or ``steps`` steps) log a progress line at INFO
        when ``client`` is local rank 0's (None on the other local ranks):
        the step, samples/s of the mesh and of this host, and how long the
        trainer waited for the mesh in the interval (naming the member the
        mesh's plan measures slowest when the wait was a large part)."""
        self.steps += 1
        self.samples += samples
        self.mesh_samples += float(resp.total_weight or 0)
        now = time.monotonic()
        by_time = every > 0 and now - self.t0 >= every
        by_steps = steps > 0 and self.steps >= steps
        if not (by_time or by_steps):
            return
        if client is not None and log.isEnabledFor(logging.INFO):
            log.info("%s", self.line(resp, now, client))
        self.reset(now)

    def line(self, resp: Response, now: float, client: Client) -> str:
        dt = max(now - self.t0, 1e-9)
        line = (f"step {resp.next_step - 1}: {self.steps} steps in {dt:.1f}s, "
                f"{self.mesh_samples / dt:.0f} samples/s in the mesh "
                f"({self.samples / dt:.0f} on this host), {len(resp.members or [])} members; "
                f"waited {self.wait:.1f}s ({100 * self.wait / dt:.0f}%) for the mesh")
        if self.rejoins:
            line += f"; {self.rejoins} rejoins"
        if self.wait >= 0.2 * dt:
            slow = slowest_member(client)
            if slow:
                line += f", slowest member {slow}"
        return line


def slowest_member(client: Client) -> str:
    """The other member with the fewest samples/s per share of the batch
    in the node's plan ("" when the node cannot say)."""
    try:
        st = client.status() or {}
    except (RingmeshError, RingmeshConnectionError) as e:
        log.debug("status for the progress line: %s", e)
        return ""
    if not isinstance(st, dict):
        st = dict(st)
    st = st.get("status", st) or {}
    me = client.self_id
    worst = None
    for p in (st.get("rounds") or {}).get("plan") or []:
        rate = float(p.get("samples_per_s") or 0)
        if p.get("id") == me or rate <= 0:
            continue
        if worst is None or rate < worst[0]:
            worst = (rate, p["id"])
    return f"{_short(worst[1])} ({worst[0]:.0f} samples/s)" if worst else ""
