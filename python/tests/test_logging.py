"""What a trainer prints: ringmesh's log lines are visible by default (and
go to the program's own logging once it has some), a trainer waiting for
members says so with the node's count, survivors say when a peer left the
ring, and the optimizer's repr shows the mesh."""

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import torch
import torch.nn.functional as F

import ringmesh
import ringmesh.torch as rt

from . import nodes

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DefaultHandlerTest(unittest.TestCase):
    def run_py(self, code):
        return subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": HERE})

    def test_visible_by_default(self):
        r = self.run_py("import ringmesh, logging; logging.getLogger('ringmesh.torch').info('waiting for 2 members')")
        self.assertIn("ringmesh: waiting for 2 members", r.stderr)

    def test_programs_logging_takes_over(self):
        r = self.run_py("import logging; logging.basicConfig(level=logging.INFO, format='APP %(name)s %(message)s'); "
                        "import ringmesh; logging.getLogger('ringmesh.torch').info('hello')")
        self.assertIn("APP ringmesh.torch hello", r.stderr)
        self.assertNotIn("ringmesh: hello", r.stderr)

    def test_quiet(self):
        r = self.run_py("import os; os.environ['RINGMESH_LOG'] = 'quiet'; import ringmesh, logging; "
                        "logging.getLogger('ringmesh.torch').warning('hidden')")
        self.assertNotIn("hidden", r.stderr)


def model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 3))


class MeshEventsTest(unittest.TestCase):
    def test_waiting_and_peer_left(self):
        with tempfile.TemporaryDirectory() as root:
            ns = nodes.cluster(root, 3)
            try:
                opts = []
                stop = threading.Event()
                errors = []

                def trainer(n, steps):
                    m = model()
                    c = ringmesh.Client(n.data_dir, timeout=60)
                    opt = rt.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m, c, join_timeout=120)
                    opts.append(opt)
                    try:
                        opt.join()
                        while not stop.is_set() and opt.next_step < steps:
                            x = torch.randn(8, 4)
                            opt.zero_grad()
                            F.mse_loss(m(x), torch.zeros(8, 3)).backward()
                            opt.step(batch_size=8)
                            time.sleep(0.02)
                    except ringmesh.RingmeshConnectionError:
                        pass  # the killed node's trainer
                    except BaseException as e:  # reported below
                        errors.append(e)

                with self.assertLogs("ringmesh", level="INFO") as logs:
                    ts = [threading.Thread(target=trainer, args=(ns[0], 10 ** 6), daemon=True)]
                    ts[0].start()
                    # The first trainer waits for the other two: it says so.
                    deadline = time.monotonic() + 60
                    while not any("waiting for the mesh" in line for line in logs.output):
                        self.assertLess(time.monotonic(), deadline, f"no waiting line: {logs.output}")
                        time.sleep(0.2)
                    for n in ns[1:]:
                        t = threading.Thread(target=trainer, args=(n, 10 ** 6), daemon=True)
                        t.start()
                        ts.append(t)
                    deadline = time.monotonic() + 120
                    while len(opts) < 3 or any(o.last is None for o in opts[:3]):
                        self.assertLess(time.monotonic(), deadline, "the three did not train")
                        time.sleep(0.2)
                    r = repr(opts[0])
                    self.assertRegex(r, r"step=\d+ rank=\d/3 share=0\.\d+ members=\[<peer\.ID")
                    victim = ns[2]
                    victim.kill()
                    deadline = time.monotonic() + 120
                    while not any("left the ring" in line for line in logs.output):
                        self.assertLess(time.monotonic(), deadline, f"no 'left the ring' line: {logs.output[-10:]}")
                        time.sleep(0.2)
                    stop.set()
                    for t in ts:
                        t.join(timeout=60)
                self.assertEqual(errors, [])
                waiting = [line for line in logs.output if "waiting for the mesh" in line]
                self.assertTrue(any("present" in line for line in waiting), waiting)
                left = [line for line in logs.output if "left the ring" in line]
                self.assertTrue(any(victim.id[-6:] in line and "2 members now" in line for line in left), left)
            finally:
                for n in ns:
                    n.stop()


if __name__ == "__main__":
    unittest.main()
