"""A new mesh starts every member from one state (issue 25 item 3).

Torch DDP broadcasts rank 0's parameters and buffers when it wraps the
model; across hosts ringmesh does the same through the mesh: the trainers
of a freshly formed mesh are told ``formed``, the member with the lowest
peer ID saves its state as the checkpoint of the entry step, and the others
fetch it through their nodes and load it before their first step.

- Two hosts whose trainers initialize with different seeds end bit-identical,
  and equal to plain torch from the lowest member's initialization (without
  the sync they would train two different models forever).
- ``sync_initial_state=False`` keeps each host's own state: they differ.
- A member that gets no initial state in time says so (code unavailable).
- torchrun, 2 hosts x 2 local ranks, every process perturbing its weights
  and buffers its own way before the optimizer wraps the model: all 4 ranks
  end bit-identical (local rank 0 loads the mesh's initial state, the other
  local ranks get it from local rank 0).
"""

import hashlib
import os
import tempfile
import unittest

import torch
import torch.nn.functional as F

import ringmesh
import ringmesh.torch as rt

from . import nodes, test_ddp

torch.set_num_threads(1)

STEPS = 6
B = 20
TEACHER = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))


def batch(step, sl=slice(None)):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(B, 8, generator=g)
    return x[sl], (x @ TEACHER).argmax(1)[sl]


def make_model(seed):
    """The model as a host seeded with ``seed`` initializes it (a generator
    of its own: the trainers run in threads of one process)."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    # A buffer (state that is not a parameter) that the initial state carries too.
    model.register_buffer("scale", torch.randn(4, generator=g))
    return model


def make_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def digest(model) -> str:
    h = hashlib.sha256()
    for t in list(model.parameters()) + list(model.buffers()):
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def reference(seed):
    """Plain single-process torch from the initialization of ``seed``."""
    model = make_model(seed)
    opt = make_optimizer(model)
    for step in range(STEPS):
        x, y = batch(step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def trainer(data_dir, seed, **kwargs):
    model = make_model(seed)
    client = ringmesh.Client(data_dir, timeout=60)
    opt = rt.DistributedOptimizer(make_optimizer(model), model, client, join_timeout=60, **kwargs)
    try:
        m = opt.join()
        first = digest(model)
        while opt.next_step < STEPS:
            x, y = batch(opt.next_step, opt.shard(B))
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if not opt.step(batch_size=len(x)):
                raise AssertionError(f"step {opt.next_step} not applied")
        return dict(self=client.self_id, seed=seed, formed=getattr(m, "formed", None),
                    synced_from=getattr(m, "synced_from", None), loaded=m.loaded, first=first, digest=digest(model),
                    model=model)
    finally:
        opt.close()
        client.close()


class InitialStateTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.root = tmp.name

    def cluster(self, name):
        ns = nodes.cluster_for(self, os.path.join(self.root, name), 2)
        return ns

    def test_hosts_seeded_differently_train_one_model(self):
        ns = self.cluster("sync")
        seeds = [11, 22]
        outs = nodes.run_threads([lambda d=nd.data_dir, s=s: trainer(d, s) for nd, s in zip(ns, seeds)],
                                 timeout=180)
        saver = min(outs, key=lambda o: o["self"])
        other = max(outs, key=lambda o: o["self"])
        # Both started step 0 from the lowest member's state, and ended
        # bit-identical, as plain torch from that state.
        self.assertEqual(other["first"], saver["first"], "the members started from different states")
        self.assertEqual(outs[0]["digest"], outs[1]["digest"], "the members ended with different states")
        self.assertEqual(saver["first"], digest(make_model(saver["seed"])))
        for o in outs:
            self.assertTrue(o["formed"], "the join into a new mesh did not say formed")
            self.assertEqual(o["synced_from"], saver["self"])
        self.assertIsNone(saver["loaded"], "the member with the lowest peer ID loaded a state")
        self.assertIsNotNone(other["loaded"], "the other member loaded no initial state")
        want = reference(saver["seed"])
        for (name, a), b in zip(saver["model"].named_parameters(), want.parameters()):
            self.assertTrue(torch.allclose(a, b, rtol=1e-4, atol=1e-5), f"{name} differs from plain torch")
        self.assertTrue(torch.allclose(saver["model"].scale, want.scale))

    def test_off_keeps_each_hosts_state(self):
        ns = self.cluster("off")
        outs = nodes.run_threads([lambda d=nd.data_dir, s=s: trainer(d, s, sync_initial_state=False)
                                  for nd, s in zip(ns, [11, 22])], timeout=180)
        for o in outs:
            self.assertTrue(o["formed"])
            self.assertIsNone(o["synced_from"])
            self.assertIsNone(o["loaded"])
        self.assertNotEqual(outs[0]["first"], outs[1]["first"])
        self.assertNotEqual(outs[0]["digest"], outs[1]["digest"])

    def test_no_initial_state_in_time(self):
        # The lowest member's trainer does not share its state (the setting
        # differs): the other waits sync_timeout and fails saying why.
        ns = sorted(self.cluster("missing"), key=lambda nd: nd.id)

        def source():
            model = make_model(11)
            with ringmesh.Client(ns[0].data_dir, timeout=60) as client:
                return rt.join(model, make_optimizer(model), client, timeout=60, sync_initial_state=False).formed

        def waiter():
            model = make_model(22)
            with ringmesh.Client(ns[1].data_dir, timeout=60) as client:
                try:
                    rt.join(model, make_optimizer(model), client, timeout=60, sync_timeout=3)
                except ringmesh.RingmeshError as e:
                    return e
            return None

        formed, err = nodes.run_threads([source, waiter], timeout=120)
        self.assertTrue(formed)
        self.assertIsInstance(err, ringmesh.RingmeshError, "joined without the initial state")
        self.assertEqual(err.code, "unavailable")
        self.assertIn("no state from", err.message)
        self.assertIn("sync_initial_state=False", err.message)


# PERTURBED runs the DDP example with every process's weights and buffers
# made its own (host and local rank) after DDP's broadcast among the local
# ranks, before the optimizer wraps the model.
PERTURBED = """import os, runpy, sys, torch
import ringmesh.torch as rt
init = rt.DistributedOptimizer.__init__
def perturbed(self, optimizer, model, *args, **kwargs):
    g = torch.Generator().manual_seed({host} * 100 + int(os.environ["LOCAL_RANK"]))
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.add_(torch.randn(t.shape, generator=g))
    init(self, optimizer, model, *args, **kwargs)
rt.DistributedOptimizer.__init__ = perturbed
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


class TorchrunInitialStateTest(unittest.TestCase):
    def test_local_ranks_of_hosts_seeded_differently(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        ns = nodes.cluster_for(self, tmp.name, 2)
        procs = []
        self.addCleanup(lambda: [test_ddp.kill_group(p) for p in procs])
        for i, nd in enumerate(ns):
            wrapper = os.path.join(tmp.name, f"perturbed{i}.py")
            with open(wrapper, "w") as f:
                f.write(PERTURBED.format(host=i + 1, script=test_ddp.MESH))
            procs.append(test_ddp.torchrun(wrapper, 2, ["--epochs", "1", "--batch", "512", "--seed", "3"],
                                           nd.data_dir))
        texts = test_ddp.finish(self, procs)
        hashes = [h for t in texts for h in test_ddp.rank_hashes(t)]
        self.assertEqual(len(hashes), 4, texts)
        self.assertEqual(len(set(hashes)), 1, hashes)
        lowest = min(range(2), key=lambda i: ns[i].id)
        self.assertIn("this member's state is everyone's start", texts[lowest])
        self.assertIn("loaded the initial state", texts[1 - lowest])


if __name__ == "__main__":
    unittest.main()
