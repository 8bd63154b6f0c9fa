"""Overlap with local ranks: 2 hosts x 2 local ranks stay bit-identical.

- Each host's local rank 0 hands DDP's buckets to its node from the comm
  hook (overlap=True, every part before backward ends), and after many
  steps with no delay every rank of both hosts holds the same parameters,
  having applied the same gradients at every step.

The model has no floating-point buffers, so every part of the step is
marked from the hook: the node can apply the step (write the mesh's result
into the shared buffer) before DDP copies the buckets back into ``.grad``
at the end of backward. When ``.grad`` was bound to that shared buffer, the
copy overwrote the mesh's result with the host's own local ranks' mean on
some steps, on either host (issue 25, item 1).

The trainers are started as torchrun would start them (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT), without its agent.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

from . import nodes
from .test_ddp import free_port

PYPATH = os.path.join(nodes.REPO, "python")

TRAINER = r'''
import hashlib, json, sys
import torch
import torch.distributed as dist
import ringmesh.torch as rt

steps = int(sys.argv[1])
torch.set_num_threads(1)
dist.init_process_group("gloo")
torch.manual_seed(0)
# No floating-point buffers: no part is left for step() to mark.
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
g = torch.Generator().manual_seed(1)
x, y = torch.randn(1024, 16, generator=g), torch.randn(1024, 4, generator=g)
ds = torch.utils.data.TensorDataset(x, y)
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = rt.DistributedOptimizer(torch.optim.SGD(ddp.parameters(), lr=0.05), ddp)
loader = torch.utils.data.DataLoader(ds, batch_sampler=rt.DistributedSampler(ds, opt, batch_size=64, shuffle=False))

def digest(ts):
    return hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for t in ts)).hexdigest()[:16]

grads, early = {}, []
while opt.next_step < steps:
    for xb, yb in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(xb), yb).backward()
        k = opt.next_step
        if opt.step():
            grads[k] = digest(p.grad for p in model.parameters())
            early.append(list(opt.overlapped))
        if opt.next_step >= steps:
            break
print(json.dumps({"params": digest(model.parameters()), "grads": grads, "early": early,
                  "lead": opt.local_rank == 0}), flush=True)
'''


class OverlapLocalRanksTest(unittest.TestCase):
    STEPS = 300

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        self.script = os.path.join(self.tmp, "trainer.py")
        with open(self.script, "w") as f:
            f.write(TRAINER)

    def test_two_hosts_two_local_ranks_stay_identical(self):
        ns = nodes.cluster_for(self, os.path.join(self.tmp, "mesh"), 2)
        procs = []  # (host, local rank, process)
        for h, nd in enumerate(ns):
            port = str(free_port())
            for r in range(2):
                env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYPATH, RINGMESH_DATA_DIR=nd.data_dir,
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(r), LOCAL_RANK=str(r),
                           WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", GLOO_SOCKET_IFNAME="lo")
                procs.append((h, r, subprocess.Popen([sys.executable, self.script, str(self.STEPS)], env=env,
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                     start_new_session=True)))
        outs = {}
        try:
            for h, r, p in procs:
                o, e = p.communicate(timeout=300)
                self.assertEqual(p.returncode, 0, f"host {h} rank {r}:\n{e.decode()[-3000:]}")
                outs[h, r] = json.loads(o.decode().strip().splitlines()[-1])
        finally:
            for _, _, p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for (h, r), o in outs.items():
            self.assertEqual(len(o["grads"]), self.STEPS, f"host {h} rank {r}: a step was not applied")
            if o["lead"]:
                # Every part went to the node from DDP's hook (the racy path).
                self.assertTrue(all(e == p for e, p in o["early"]), f"host {h}: {o['early'][:5]}")
        # The same gradient applied on every rank at every step...
        ref = outs[0, 0]["grads"]
        for (h, r), o in outs.items():
            bad = [k for k in ref if o["grads"].get(k) != ref[k]]
            self.assertEqual(bad, [], f"host {h} rank {r} applied another gradient than host 0 rank 0 at steps "
                                      f"{bad[:10]} ({len(bad)} of {self.STEPS})")
        # ...so the same parameters at the end.
        self.assertEqual(len({o["params"] for o in outs.values()}), 1,
                         {f"host {h} rank {r}": o["params"] for (h, r), o in outs.items()})


if __name__ == "__main__":
    unittest.main()
