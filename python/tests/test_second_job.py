"""A second job on nodes that stay up (issue 25 item 4).

- Two nodes; torchrun (2 local ranks) of the DDP example on each host
  trains a job to its end. A second job of the same script on the same
  running nodes starts on its own (nobody trains the old list any more:
  the nodes form a new mesh from the step the trainers say, 0), trains
  the same steps, and ends where the first one did (the same seed and
  data: the same parameters within float tolerance; the split of the
  global batch may differ), with every rank bit-identical.
"""

import os
import tempfile
import unittest

import torch

from . import nodes
from .test_ddp import MESH, finish, rank_hashes, torchrun


class SecondJobTest(unittest.TestCase):
    def test_second_job_on_running_nodes(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        ns = nodes.cluster_for(self, tmp.name, 2)
        args = ["--epochs", "1", "--batch", "256", "--seed", "5"]
        states = []
        for job in range(2):
            outs = [os.path.join(tmp.name, f"job{job}-host{i}.pt") for i in range(2)]
            procs = [torchrun(MESH, 2, args + ["--out", outs[i]], ns[i].data_dir) for i in range(2)]
            texts = finish(self, procs, timeout=240)
            hashes = [h for t in texts for h in rank_hashes(t)]
            self.assertEqual(len(hashes), 4, texts)
            self.assertEqual(len(set(hashes)), 1, f"job {job}: ranks differ: {hashes}")
            states.append(torch.load(outs[0]))
        first, second = states
        for k in first:
            self.assertTrue(torch.allclose(first[k], second[k], rtol=1e-4, atol=1e-5),
                            f"{k}: the second job did not train the first job's steps: max diff "
                            f"{(first[k] - second[k]).abs().max().item()}")


if __name__ == "__main__":
    unittest.main()
