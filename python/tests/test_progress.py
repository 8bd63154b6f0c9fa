"""The trainer's progress line (logger ringmesh.torch, INFO): step,
samples/s of the mesh and of this host, time waited for the mesh in the
interval and, when the wait is a large part of it, the member the node
measures slowest. On by default every 30 s; progress_steps adds a step
count; 0 turns it off."""

import os
import re
import tempfile
import threading
import time
import unittest

import torch
import torch.nn.functional as F

import ringmesh
import ringmesh.torch as rt

from . import nodes


def model():
    torch.manual_seed(1)
    return torch.nn.Linear(4, 3)


class ProgressTest(unittest.TestCase):
    def test_defaults(self):
        with tempfile.TemporaryDirectory() as root:
            nd = nodes.cluster(root, 1)[0]
            try:
                m = model()
                old = os.environ.pop("RINGMESH_PROGRESS", None)
                try:
                    c = ringmesh.Client(nd.data_dir)
                    self.addCleanup(c.close)
                    opt = rt.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m, c)
                finally:
                    if old is not None:
                        os.environ["RINGMESH_PROGRESS"] = old
                self.assertEqual((opt.progress_every, opt.progress_steps), (30.0, 0))
                opt.close()
            finally:
                nd.stop()

    def test_progress_names_slow_member(self):
        with tempfile.TemporaryDirectory() as root:
            ns = nodes.cluster(root, 2)
            errors = []

            def trainer(nd, delay, progress_steps):
                try:
                    m = model()
                    opt = rt.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m,
                                                  ringmesh.Client(nd.data_dir, timeout=60), join_timeout=60,
                                                  progress_every=0, progress_steps=progress_steps)
                    while opt.next_step < 20:
                        opt.zero_grad()
                        F.mse_loss(m(torch.randn(8, 4)), torch.zeros(8, 3)).backward()
                        time.sleep(delay)
                        opt.step(batch_size=8)
                except BaseException as e:  # reported below
                    errors.append(e)

            try:
                with self.assertLogs("ringmesh.torch", level="INFO") as logs:
                    # Node 0's trainer is fast and says its progress every 5
                    # steps; node 1's is slow (0.1 s a step) and says none.
                    ts = [threading.Thread(target=trainer, args=(ns[0], 0, 5), daemon=True),
                          threading.Thread(target=trainer, args=(ns[1], 0.1, 0), daemon=True)]
                    for t in ts:
                        t.start()
                    for t in ts:
                        t.join(120)
                self.assertEqual(errors, [])
                lines = [r.getMessage() for r in logs.records if "samples/s in the mesh" in r.getMessage()]
                self.assertEqual(len(lines), 4, lines)  # steps 4, 9, 14, 19
                m = re.match(r"step (\d+): 5 steps in ([\d.]+)s, (\d+) samples/s in the mesh \((\d+) on this host\), "
                             r"2 members; waited ([\d.]+)s \((\d+)%\) for the mesh", lines[-1])
                self.assertIsNotNone(m, lines[-1])
                self.assertEqual(m.group(1), "19")
                mesh_rate, host_rate = int(m.group(3)), int(m.group(4))
                self.assertAlmostEqual(mesh_rate / max(host_rate, 1), 2, delta=0.3)
                self.assertGreater(float(m.group(5)), 0.2)  # the fast trainer waits for the slow one
                short = rt._short(ns[1].id)
                self.assertTrue(any(f"slowest member {short}" in line for line in lines), lines)
            finally:
                for nd in ns:
                    nd.stop()

    def test_off(self):
        with tempfile.TemporaryDirectory() as root:
            nd = nodes.cluster(root, 1)[0]
            try:
                m = model()
                c = ringmesh.Client(nd.data_dir)
                self.addCleanup(c.close)
                opt = rt.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m, c,
                                              progress_every=0, progress_steps=0)
                with self.assertLogs("ringmesh.torch", level="DEBUG") as logs:
                    rt.log.debug("marker")  # assertLogs needs one record
                    for _ in range(5):
                        opt.zero_grad()
                        F.mse_loss(m(torch.randn(8, 4)), torch.zeros(8, 3)).backward()
                        opt.step(batch_size=8)
                self.assertFalse([r for r in logs.records if "samples/s" in r.getMessage()])
                opt.close()
            finally:
                nd.stop()


if __name__ == "__main__":
    unittest.main()
