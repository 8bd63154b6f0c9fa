"""The names programs import from ringmesh.torch stay importable from
there, whichever of the package's modules defines them."""

import unittest

import ringmesh.torch as rt

# Every public name of ringmesh.torch when it was one module, and the
# private ones the tests reach through it.
NAMES = [
    "DistributedOptimizer", "DistributedSampler", "DistributedDataParallel", "GradientAverager", "Membership",
    "join", "save", "load", "default_checkpoint_dir", "state_hash", "shard", "share_slice",
    "CHECKPOINT_FORMAT", "SYNC_TIMEOUT", "log", "torch",
    "Client", "Response", "CheckpointError", "NodeConnectionLost", "RingmeshConnectionError", "RingmeshError",
    "_short", "_resume",
]


class PublicNamesTest(unittest.TestCase):
    def test_names_importable(self):
        self.assertEqual([n for n in NAMES if not hasattr(rt, n)], [])

    def test_star_import_gives_the_api(self):
        ns = {}
        exec("from ringmesh.torch import *", ns)
        self.assertEqual([n for n in rt.__all__ if n not in ns], [])
        self.assertIs(ns["DistributedOptimizer"], rt.DistributedOptimizer)


if __name__ == "__main__":
    unittest.main()
