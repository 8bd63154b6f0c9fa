"""resume picks the newest run's newest checkpoint, not the highest step:
a second job on the same nodes starts again at step 0 in a later epoch,
while the first job's checkpoints (higher steps) are still held."""

import tempfile
import unittest

import ringmesh.torch as rt
from ringmesh.errors import RingmeshError


class FakeClient:
    data_dir = "/nonexistent"

    def __init__(self, known):
        self.known = known
        self.fetched = []

    def checkpoint_list(self):
        return self.known

    def checkpoint_fetch(self, dest, root):
        self.fetched.append(root)
        raise RingmeshError("unavailable", "not in this test")


class ResumeOrderTest(unittest.TestCase):
    def test_newest_run_first(self):
        c = FakeClient([
            {"step": 60, "root": "old60", "run_id": "m/e1"},
            {"step": 50, "root": "old50", "run_id": "m/e1"},
            {"step": 20, "root": "new20", "run_id": "m/e3"},
            {"step": 10, "root": "new10", "run_id": "m/e3"},
        ])
        with tempfile.TemporaryDirectory() as d:
            self.assertIsNone(rt._resume(None, None, c, 0, d))
        self.assertEqual(c.fetched, ["new20", "new10", "old60"])


if __name__ == "__main__":
    unittest.main()
