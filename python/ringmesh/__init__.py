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

PyTorch helpers (gradient averaging, joins that load the newest
checkpoint, checkpoint saves) are in ``ringmesh.torch``.
"""

from .client import Client, Response, SharedBuffer
from .errors import (CheckpointError, NodeConnectionLost, NodeNotRunning, ProtocolError,
                     RingmeshConnectionError, RingmeshError)
from .protocol import REJOIN_CODES

__version__ = "0.1.0"

__all__ = [
    "Client", "Response", "SharedBuffer", "RingmeshError", "RingmeshConnectionError",
    "NodeNotRunning", "NodeConnectionLost", "ProtocolError", "CheckpointError", "REJOIN_CODES",
]
