"""examples/pytorch/tutorial: pytorch/examples' DDP tutorial script
(multinode.py) ported to ringmesh.

- The port changes at most 5 lines and keeps the tutorial's structure: a
  sampler passed as ``sampler=`` with ``set_epoch`` on it, a
  ``next(iter(loader))`` peek, a per-rank ``--batch_size``, the optimizer
  built from the bare model before the Trainer wraps it in DDP.
- Under torchrun, 2 hosts (nodes) x 2 local ranks with the defaults end
  with one parameter hash on every rank, each rank took --batch_size
  samples per step, and the optimizer took over the DDP model (its comm
  hook: no double reduction).
"""

import difflib
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

from . import nodes
from .test_ddp import finish, kill_group, torchrun

TUT_DIR = os.path.join(nodes.REPO, "examples", "pytorch", "tutorial")
PLAIN = os.path.join(TUT_DIR, "multinode.py")
MESH = os.path.join(TUT_DIR, "multinode_ringmesh.py")
PYPATH = os.path.join(nodes.REPO, "python")


def changed_lines(a_path, b_path):
    with open(a_path) as f:
        a = f.read().splitlines()
    with open(b_path) as f:
        b = f.read().splitlines()
    return [line for line in difflib.unified_diff(a, b, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


# One process: the tutorial's order (optimizer from the bare model, loader
# with sampler=, DDP wrapping later), a peek before set_epoch every epoch.
ONE_PROCESS = """import sys, torch, torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
import ringmesh, ringmesh.torch as rt
torch.manual_seed(0)
data = TensorDataset(torch.randn(100, 4), torch.randint(0, 3, (100,)))
m = torch.nn.Linear(4, 3)
opt = rt.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m, ringmesh.Client(sys.argv[1]))
loader = DataLoader(data, batch_size=16, sampler=rt.DistributedSampler(data))
model = rt.DistributedDataParallel(m)
seen = []
for epoch in range(2):
    peek = len(next(iter(loader))[0])
    assert (peek, len(loader)) == (16, 6), (peek, len(loader))
    loader.sampler.set_epoch(epoch)
    for x, y in loader:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        assert opt.step()
        seen.append(len(x))
assert seen == [16] * 12, seen
assert opt.next_step == 12, opt.next_step
assert opt._hooked and opt.model is model and opt.overlapped[1] > 0, (opt._hooked, opt.overlapped)
print("ok")
"""


class TutorialPortTest(unittest.TestCase):
    def test_sampler_and_late_ddp_in_one_process(self):
        with tempfile.TemporaryDirectory(prefix="ringmesh-pytest-") as tmp:
            nd = nodes.cluster(tmp, 1)[0]
            try:
                r = subprocess.run([sys.executable, "-c", ONE_PROCESS, nd.data_dir], capture_output=True, text=True,
                                   timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYPATH))
            finally:
                nd.stop()
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        self.assertIn("ok", r.stdout)

    def test_diff_is_small(self):
        changed = changed_lines(PLAIN, MESH)
        removed = sum(1 for line in changed if line.startswith("-"))
        added = len(changed) - removed
        self.assertLessEqual(max(added, removed), 5, "\n".join(changed))
        with open(MESH) as f:
            text = f.read()
        # The tutorial's structure, unchanged in the port.
        for kept in ["sampler=DistributedSampler(dataset)", "self.train_data.sampler.set_epoch(epoch)",
                     "len(next(iter(self.train_data))[0])", "self.model = DDP(self.model",
                     "batch_size=batch_size,", "'--batch_size'", "optimizer = DistributedOptimizer(torch.optim.SGD("
                     "model.parameters()", "self._load_snapshot(snapshot_path)"]:
            self.assertIn(kept, text)
        # The README shows the diff as it is.
        with open(os.path.join(TUT_DIR, "README.md")) as f:
            readme = f.read()
        for line in changed:
            self.assertIn(line, readme)

    def test_two_hosts_two_local_ranks(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        ns = nodes.cluster_for(self, tmp.name, 2)
        procs = []
        self.addCleanup(lambda: [kill_group(p) for p in procs])
        for i, nd in enumerate(ns):
            cwd = os.path.join(tmp.name, f"host{i}")  # each host's snapshot.pt
            os.makedirs(cwd)
            procs.append(torchrun(MESH, 2, [], nd.data_dir, cwd, RINGMESH_LOG="debug", RINGMESH_PROGRESS="1"))
        t0 = time.monotonic()
        texts = finish(self, procs, timeout=300)
        took = time.monotonic() - t0
        hashes = [h for t in texts for h in re.findall(r"\[RANK\d\] done: params ([0-9a-f]{16})", t)]
        self.assertEqual(len(hashes), 4, texts)
        self.assertEqual(len(set(hashes)), 1, hashes)
        for t in texts:
            # Per-rank batch size; 2048 samples / (32 x 4 ranks) = 16 steps an epoch.
            self.assertEqual(sorted(re.findall(r"Epoch (\d) \| Batchsize: (\d+) \| Steps: (\d+)", t)),
                             [(e, "32", "16") for e in "001122"], t[-3000:])
            self.assertIn("the optimizer hooks into its buckets", t)
            self.assertRegex(t, r"samples/s in the mesh")
            self.assertIn("Training snapshot saved", t)
        st = nodes.status(ns[0].data_dir) or {}
        self.assertEqual(st.get("rounds", {}).get("next_step"), 48, st.get("rounds"))
        print(f"\ntutorial port, 2 hosts x 2 local ranks: one hash {hashes[0]} in {took:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
