"""ringmesh: the Python client of a ringmesh node.

A trainer talks to the ``ringmesh node`` on its own host through the socket
``DATA_DIR/ringmesh.sock`` (the local trainer API): it joins the mesh, then
all-reduces numpy arrays or torch tensors in place through shared memory,
one all-reduce per training step::

    import ringmesh
    c = ringmesh.Client("/var/lib/ringmesh")
    step = c.join().step
    grads = c.shared_array(n)            # lives in shared memory: no copies
    while True:
        grads[:] = compute(step)
        try:
            r = c.allreduce(grads, step, reduce="wmean", weight=batch)
        except ringmesh.RingmeshError as e:
            if e.code not in ringmesh.REJOIN_CODES:
                raise
            step = c.join().step          # load the checkpoint, go on
            continue
        apply(grads)
        step = r.next_step

Log lines (logger ``ringmesh``: waiting for members, a peer gone, retried
rounds, rejoins) show on stderr until the program configures logging of its
own; ``RINGMESH_LOG=debug|info|warning|quiet`` sets the level.

PyTorch helpers (gradient averaging, joins that load the newest
checkpoint, checkpoint saves) are in ``ringmesh.torch``.
"""

import logging as _logging
import os as _os
import sys as _sys


class _DefaultHandler(_logging.StreamHandler):
    """Shows ringmesh's log lines on stderr while the program has set up no
    logging of its own (no handler on the root logger); once it has, the
    lines go there instead, through propagation."""

    def __init__(self):
        super().__init__(_sys.stderr)
        self.setFormatter(_logging.Formatter("ringmesh: %(message)s"))

    def emit(self, record):
        if _logging.getLogger().handlers:
            return
        self.stream = _sys.stderr
        super().emit(record)


_log = _logging.getLogger("ringmesh")
if not any(isinstance(h, _DefaultHandler) for h in _log.handlers):
    _log.addHandler(_DefaultHandler())
# RINGMESH_LOG=debug|info|warning|error|quiet; default info: a trainer says
# when it waits for members, when a peer dies, retries and rejoins.
_level = _os.environ.get("RINGMESH_LOG", "info").upper()
if _log.level == _logging.NOTSET:
    _log.setLevel(_logging.CRITICAL + 1 if _level == "QUIET" else getattr(_logging, _level, _logging.INFO))

from .client import Client, Response, SharedBuffer  # noqa: E402
from .errors import (CheckpointError, NodeConnectionLost, NodeNotRunning,  # noqa: E402
                     ProtocolError, RingmeshConnectionError, RingmeshError)
from .protocol import REJOIN_CODES  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Client", "Response", "SharedBuffer", "RingmeshError", "RingmeshConnectionError",
    "NodeNotRunning", "NodeConnectionLost", "ProtocolError", "CheckpointError", "REJOIN_CODES",
]
