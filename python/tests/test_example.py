"""examples/pytorch/train.py runs as documented: two trainer processes on a
2-node mesh train, the loss falls, and both print the same parameter hash."""

import os
import re
import subprocess
import sys
import tempfile
import unittest

from . import nodes

EXAMPLE = os.path.join(nodes.REPO, "examples", "pytorch", "train.py")


class ExampleTest(unittest.TestCase):
    def test_two_hosts(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        ns = nodes.cluster_for(self, tmp.name, 2)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, EXAMPLE, "--data-dir", nd.data_dir, "--steps", "60",
                                   "--log-every", "10", "--device", "cpu"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
                 for nd in ns]
        outs = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                    q.wait()
                raise
            outs.append(out.decode())
            self.assertEqual(p.returncode, 0, out.decode())
        hashes = []
        for out in outs:
            self.assertIn("joined at step 0: rank ", out)
            m = re.search(r"done at step 60: parameter hash ([0-9a-f]{16})", out)
            self.assertIsNotNone(m, out)
            hashes.append(m.group(1))
            losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
            self.assertGreaterEqual(len(losses), 6, out)
            self.assertLess(losses[-1], losses[0] * 0.7, out)
            self.assertIn("members 2", out)
        self.assertEqual(hashes[0], hashes[1])

    def test_no_node(self):
        with tempfile.TemporaryDirectory(prefix="ringmesh-pytest-") as d:
            out = subprocess.run([sys.executable, EXAMPLE, "--data-dir", d], capture_output=True, timeout=120)
        self.assertEqual(out.returncode, 1)
        err = out.stderr.decode()
        self.assertIn(f"no ringmesh node in {d}", err)
        self.assertEqual(err.count("\n"), 1, err)
