"""A DDP model's gradient buckets go to the mesh while backward runs.

- Two single-process hosts with ``ringmesh.torch.DistributedDataParallel``
  and overlap end bit-identical, at the parameters of one process over the
  same global batches (float tolerance), and every grad part of every step
  reached the node from DDP's hook, before backward ended.
- A host with overlap and one without (another cut of the step) fail with
  ``settings_mismatch``, not a hang.
"""

import os
import subprocess
import sys
import tempfile
import unittest

import torch

from . import nodes

PYPATH = os.path.join(nodes.REPO, "python")

TRAINER = r'''
import hashlib, json, sys
import torch
import ringmesh.torch as rt

mode, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
torch.set_num_threads(1)
layers = []
for i in range(6):
    layers += [torch.nn.Linear(64, 64), torch.nn.Tanh()]
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), *layers, torch.nn.Linear(64, 4))
g = torch.Generator().manual_seed(1)
x, y = torch.randn(512, 16, generator=g), torch.randn(512, 4, generator=g)
ds = torch.utils.data.TensorDataset(x, y)
if mode == "single":
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(steps):
        # the same global batches as DistributedSampler(shuffle=False)
        idx = [(step * 64 + i) % 512 for i in range(64)]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        opt.step()
    torch.save(model.state_dict(), out)
    sys.exit(0)
ddp = rt.DistributedDataParallel(model, bucket_cap_mb=0.01)
opt = rt.DistributedOptimizer(torch.optim.SGD(ddp.parameters(), lr=0.05), ddp, overlap=(mode == "overlap"),
                              part_mb=0.02)
sampler = rt.DistributedSampler(ds, opt, batch_size=64, shuffle=False)
loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler)
early = []
while opt.next_step < steps:
    for xb, yb in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(xb), yb).backward()
        if opt.step():
            early.append(opt.overlapped)
        if opt.next_step >= steps:
            break
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
torch.save(model.state_dict(), out)
print(json.dumps({"hash": h, "early": early}))
'''


class OverlapTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        self.script = os.path.join(self.tmp, "trainer.py")
        with open(self.script, "w") as f:
            f.write(TRAINER)

    def run_trainers(self, modes, data_dirs, steps):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYPATH, RINGMESH_LOG="info")
        procs = []
        for i, (mode, d) in enumerate(zip(modes, data_dirs)):
            out = os.path.join(self.tmp, f"out{i}.pt")
            procs.append(subprocess.Popen([sys.executable, self.script, mode, str(steps), out],
                                          env=dict(env, RINGMESH_DATA_DIR=d), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, start_new_session=True))
        results = []
        try:
            for p in procs:
                o, e = p.communicate(timeout=240)
                results.append((p.returncode, o.decode(), e.decode()))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return results

    def test_overlap_matches_one_process(self):
        import json
        steps = 12
        rc, _, err = self.run_trainers(["single"], [""], steps)[0]
        self.assertEqual(rc, 0, err[-3000:])
        want = torch.load(os.path.join(self.tmp, "out0.pt"))
        ns = nodes.cluster_for(self, os.path.join(self.tmp, "mesh"), 2)
        res = self.run_trainers(["overlap", "overlap"], [nd.data_dir for nd in ns], steps)
        outs = []
        for rc, out, err in res:
            self.assertEqual(rc, 0, err[-3000:])
            outs.append(json.loads(out.strip().splitlines()[-1]))
        self.assertEqual(outs[0]["hash"], outs[1]["hash"])
        for o in outs:
            self.assertEqual(len(o["early"]), steps)
            for early, parts in o["early"]:
                # Every part but the buffers' (none here: no buffers, so
                # every part) went to the node from DDP's hook.
                self.assertGreater(parts, 2, "the model should come in several parts")
                self.assertEqual(early, parts, o["early"])
        for i in range(2):
            got = torch.load(os.path.join(self.tmp, f"out{i}.pt"))
            for k in want:
                self.assertTrue(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-5),
                                f"{k}: max diff {(got[k] - want[k]).abs().max().item()}")

    def test_mixed_overlap_is_settings_mismatch(self):
        ns = nodes.cluster_for(self, os.path.join(self.tmp, "mesh"), 2)
        res = self.run_trainers(["overlap", "plain"], [nd.data_dir for nd in ns], 4)
        for rc, out, err in res:
            self.assertNotEqual(rc, 0, out)
            self.assertIn("settings_mismatch", err[-3000:])


if __name__ == "__main__":
    unittest.main()
