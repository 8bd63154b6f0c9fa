"""PyTorch equivalence: 3 members splitting a global batch of B by the
shares the mesh agrees (8/8/9 at first, then following their speeds) end
with the same parameters as 1 member with batch B, and as plain
single-process torch, over the same data order for 30 steps; members of
different speeds get unequal, changing shares and still train exactly like
plain torch; a member that joins a running mesh loads the checkpoint a
member saved for it and the mesh still trains exactly like plain torch."""

import os
import tempfile
import threading
import time
import unittest

import torch
import torch.nn.functional as F

import ringmesh
import ringmesh.torch as rt

from . import nodes

SEED = 7
STEPS = 30
B = 25
torch.set_num_threads(1)


TEACHER = torch.randn(8, 4, generator=torch.Generator().manual_seed(SEED))


def batch(step, sl=slice(None), n=B):
    """The global batch of ``step`` (n samples, the same on every member),
    or this member's slice of it."""
    g = torch.Generator().manual_seed(SEED * 100003 + step)
    x = torch.randn(n, 8, generator=g)
    return x[sl], (x @ TEACHER).argmax(1)[sl]


def make_model():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def make_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)


def reference(steps=STEPS, parts=None):
    """Plain single-process torch over the same global batches (or, with
    ``parts``, over the samples parts[step] of each)."""
    model = make_model()
    opt = make_optimizer(model)
    for step in range(steps):
        x, y = batch(step, slice(None) if parts is None else parts[step])
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def member(data_dir, bind=True, sample_delay=0.0):
    """Trains STEPS steps. bind=False takes the copy path that CUDA and
    non-float32 gradients take (gradients copied into shared memory and
    back); sample_delay slows the member down by that many seconds per
    sample of its share (a slower card)."""
    model = make_model()
    client = ringmesh.Client(data_dir, timeout=60)
    opt = rt.DistributedOptimizer(make_optimizer(model), model, client, join_timeout=60, bind_grads=bind)
    try:
        opt.join()
        first = opt.next_step
        sizes, bound = [], []
        while opt.next_step < STEPS:
            x, y = batch(opt.next_step, opt.shard(B))
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if sample_delay:
                time.sleep(sample_delay * len(x))
            if not opt.step(batch_size=len(x)):
                raise AssertionError(f"step {opt.next_step} not applied: node dropped out")
            sizes.append(len(x))
            bound.append(all(opt.averager.buffer.shm.contains(p.grad.data_ptr(), 4 * p.numel())
                             for p in model.parameters()))
        return dict(first=first, params=[p.detach().clone() for p in model.parameters()], sizes=sizes,
                    bound=bound, members=opt.membership.members, rank=opt.rank, self=client.self_id,
                    rejoins=opt.rejoins)
    finally:
        opt.close()
        client.close()


class ShardTest(unittest.TestCase):
    def test_shard_covers_batch(self):
        for n in (0, 1, 7, 25, 64):
            for world in (1, 2, 3, 5):
                got = [list(range(n))[rt.shard(n, r, world)] for r in range(world)]
                self.assertEqual(sum(got, []), list(range(n)), (n, world))
                self.assertLessEqual(max(map(len, got)) - min(map(len, got)), 1)
        with self.assertRaises(ValueError):
            rt.shard(10, 3, 3)


class EquivalenceTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.root = tmp.name

    def start(self, name, n):
        ns = nodes.cluster_for(self, os.path.join(self.root, name), n)
        return ns

    def test_three_members_equal_one(self):
        ref = reference()
        three = self.start("three", 3)
        one = self.start("one", 1)
        binds = [True, False, True, True]  # member 1 copies its gradients
        outs = nodes.run_threads([lambda d=nd.data_dir, bd=bd: member(d, bd) for nd, bd in zip(three + one, binds)],
                                 timeout=180)
        mesh3, mesh1 = outs[:3], outs[3]

        for o in outs:
            self.assertEqual(o["first"], 0)
            self.assertEqual(o["rejoins"], 0)
        # Every member of the 3-mesh took its share (8/8/9 at the first step,
        # then following the members' speeds); every step's shares add up to
        # the global batch.
        self.assertEqual(sorted(o["rank"] for o in mesh3), [0, 1, 2])
        for o in mesh3:
            self.assertEqual(o["members"], mesh3[0]["members"])
            self.assertEqual(o["sizes"][0], 9 if o["rank"] == 2 else 8)
        self.assertEqual([sum(s) for s in zip(*(o["sizes"] for o in mesh3))], [B] * STEPS)
        self.assertEqual(mesh1["sizes"], [B] * STEPS)
        # Gradients stay bound to shared memory from the first step on (zero
        # copy), except where binding is off.
        for o, bd in zip(outs, binds):
            self.assertEqual(o["bound"], [bd] * STEPS)

        # Members of a mesh hold bit-identical parameters.
        for o in mesh3[1:]:
            for a, b in zip(o["params"], mesh3[0]["params"]):
                self.assertTrue(torch.equal(a, b))
        # 3 members == 1 member == plain torch, within float32 tolerance.
        for name, got in [("3 members", mesh3[0]["params"]), ("1 member", mesh1["params"])]:
            for i, (a, r) in enumerate(zip(got, ref)):
                self.assertTrue(torch.allclose(a, r, rtol=1e-4, atol=1e-5),
                                f"{name}: parameter {i} differs from the reference by {(a - r).abs().max():.3g}")
        # The model trained: the parameters moved away from the initial ones.
        init = [p.detach() for p in make_model().parameters()]
        self.assertGreater(max((a - b).abs().max().item() for a, b in zip(ref, init)), 0.05)


# BN_B: the global batch of the BatchNorm test. Shares follow the members'
# measured speeds and may fall to 1/(16n) of the batch (README, "Mixed
# hardware"); BatchNorm in training needs two samples, and a share of 1/32
# may round to one sample fewer: 96 (not B = 25,
# whose smallest share is 0 or 1 sample: a loaded machine made it one).
BN_B = 96


def bn_member(data_dir, sync):
    """Trains STEPS steps of a model with BatchNorm; returns its
    parameters and buffers."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    g = torch.Generator().manual_seed(SEED + 2)  # not the global RNG: members build their models in threads
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    client = ringmesh.Client(data_dir, timeout=60)
    opt = rt.DistributedOptimizer(make_optimizer(model), model, client, join_timeout=60, sync_buffers=sync)
    try:
        opt.join()
        while opt.next_step < STEPS:
            x, y = batch(opt.next_step, opt.shard(BN_B), BN_B)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if not opt.step(batch_size=len(x)):
                raise AssertionError(f"step {opt.next_step} not applied")
        return dict(buffers={k: v.clone() for k, v in model.named_buffers()},
                    params=[p.detach().clone() for p in model.parameters()])
    finally:
        opt.close()
        client.close()


class BufferTest(unittest.TestCase):
    def test_batchnorm_buffers_stay_equal(self):
        # Two members computing BatchNorm statistics over different parts
        # of each batch: with sync_buffers (the default) their running
        # statistics are averaged every step, so they end bit-identical
        # (parameters too); without it the buffers drift apart.
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        outs = {}
        for sync in (True, False):
            ns = nodes.cluster_for(self, os.path.join(tmp.name, str(sync)), 2)
            outs[sync] = nodes.run_threads([lambda d=nd.data_dir: bn_member(d, sync) for nd in ns], timeout=180)
        a, b = outs[True]
        for k in a["buffers"]:
            self.assertTrue(torch.equal(a["buffers"][k], b["buffers"][k]), f"buffer {k} differs between members")
        assert_identical(self, outs[True])
        c, d = outs[False]
        self.assertFalse(torch.equal(c["buffers"]["1.running_mean"], d["buffers"]["1.running_mean"]),
                         "without sync_buffers the members' running statistics should differ")


class CompleteStateTest(unittest.TestCase):
    def test_checkpoint_carries_scheduler_and_rng(self):
        # A checkpoint holds the LR scheduler's state and the random number
        # generators' states; load puts both back.
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        nd = nodes.cluster(tmp.name, 1)[0]
        self.addCleanup(nd.stop)
        client = ringmesh.Client(nd.data_dir, timeout=60)
        self.addCleanup(client.close)
        model = make_model()
        optimizer = make_optimizer(model)
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        for _ in range(5):
            optimizer.step()
            sched.step()
        import random
        torch.manual_seed(11)
        random.seed(12)
        resp = rt.save(model, optimizer, 5, client, scheduler=sched)
        want_torch, want_py = torch.rand(3), random.random()
        torch.manual_seed(99)
        random.seed(98)
        model2 = make_model()
        optimizer2 = make_optimizer(model2)
        sched2 = torch.optim.lr_scheduler.StepLR(optimizer2, step_size=2, gamma=0.5)
        path = os.path.join(rt.default_checkpoint_dir(client), "step-000000000005.pt")
        state = rt.load(path, model2, optimizer2, sched2)
        self.assertTrue(resp.ok)
        self.assertEqual(state["step"], 5)
        self.assertEqual(sched2.state_dict(), sched.state_dict())
        self.assertEqual(optimizer2.param_groups[0]["lr"], optimizer.param_groups[0]["lr"])
        self.assertTrue(torch.equal(torch.rand(3), want_torch), "torch RNG not restored")
        self.assertEqual(random.random(), want_py, "python RNG not restored")


class MixedSpeedTest(unittest.TestCase):
    def test_unequal_changing_shares_equal_plain_torch(self):
        # Members 1 and 2 are slowed (per-sample sleeps): the mesh moves
        # shares to member 0 step by step, every step's shares still cover
        # the global batch exactly once, and the parameters match plain
        # torch over the whole batches.
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        ns = nodes.cluster_for(self, tmp.name, 3)
        delays = [0.0, 0.004, 0.008]
        outs = nodes.run_threads([lambda d=nd.data_dir, dl=dl: member(d, sample_delay=dl) for nd, dl in zip(ns, delays)],
                                 timeout=240)
        self.assertEqual([sum(s) for s in zip(*(o["sizes"] for o in outs))], [B] * STEPS)
        fast, slow = outs[0]["sizes"], outs[2]["sizes"]
        self.assertGreater(len(set(fast)), 1, f"the fast member's share never changed: {fast}")
        self.assertGreater(fast[-1], slow[-1], f"shares by step: fast {fast}, slow {slow}")
        assert_identical(self, outs)
        assert_params_close(self, outs[0]["params"], reference())


def train_until(data_dir, stop, started, fresh=False, pause=0.0, stall_at=None, stall=0.0, reconnect=0.0):
    """Trains until stop["at"] is set and reached; returns what it did.

    A ``fresh`` member starts from a different initialisation (only the
    mesh's checkpoint can give it the right state) and sets stop["at"] to
    10 steps after its entry step. A member with ``stall_at`` sleeps
    ``stall`` seconds before submitting that step (its node excludes it);
    it, and a member with ``reconnect`` (its node is killed and restarted),
    sets stop["at"] to 10 steps after the step it rejoins at. Either is set
    before the member's next all-reduce, which the others wait for."""
    model = make_model()
    if fresh:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.123)
    client = ringmesh.Client(data_dir, timeout=60)
    optimizer = make_optimizer(model)
    # A scheduler that keeps the LR (plain torch is the reference) but
    # counts its steps: a joiner has the members' count only if the
    # checkpoint carried it.
    sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10**6, gamma=0.5)
    opt = rt.DistributedOptimizer(optimizer, model, client, join_timeout=120, reconnect_timeout=reconnect, scheduler=sched)
    try:
        m = opt.join()
        entry, loaded = m.step, m.checkpoint
        if fresh:
            stop["at"] = entry + 10
        worlds, rejoined, used = [], [], []
        while stop["at"] is None or opt.next_step < stop["at"]:
            if opt.next_step >= 5:
                started.set()
            if opt.next_step > 3000:
                raise AssertionError("the other member never came")
            step, members = opt.next_step, list(opt.membership.members)
            part = opt.shard(B)
            x, y = batch(step, part)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if stall_at is not None and step == stall_at:
                time.sleep(stall)
            if not opt.step(batch_size=len(x)):
                rejoined.append((opt.next_step, opt.membership.checkpoint))
                if stall_at is not None or reconnect:
                    stop["at"] = opt.next_step + 10
                continue
            worlds.append(len(members))
            used.append((step, members, list(opt.last.members), range(B)[part]))
            if pause:
                time.sleep(pause)
        return dict(entry=entry, loaded=loaded, worlds=worlds, end=opt.next_step, rejoined=rejoined, used=used,
                    self=client.self_id, sched=sched.state_dict(),
                    rejoins=opt.rejoins, params=[p.detach().clone() for p in model.parameters()])
    finally:
        opt.close()
        client.close()


def applied_samples(outs, o):
    """For each step member o applied, the sorted indices of the global
    batch that round averaged: the parts of the batch (the shares the mesh
    gave them) of the members in the ring that produced it."""
    took = {}  # (member, step) -> the samples it computed
    for x in outs:
        for step, _, _, part in x["used"]:
            took[(x["self"], step)] = list(part)
    parts = {}
    for step, _, ring, _ in o["used"]:
        parts[step] = sorted(i for r in ring for i in took[(r, step)])
    return parts


def assert_params_close(t, got, want):
    for i, (x, r) in enumerate(zip(got, want)):
        t.assertTrue(torch.allclose(x, r, rtol=1e-4, atol=1e-5),
                     f"parameter {i} differs from the reference by {(x - r).abs().max():.3g}")


def assert_identical(t, outs):
    for o in outs[1:]:
        for x, y in zip(o["params"], outs[0]["params"]):
            t.assertTrue(torch.equal(x, y))


class JoinTest(unittest.TestCase):
    def test_joiner_loads_checkpoint(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        ns = nodes.cluster(tmp.name, 2)
        ns.append(nodes.Node(os.path.join(tmp.name, "2"), "--min-members", "2", "--join", ns[0].addr))
        for nd in ns:
            self.addCleanup(nd.stop)
        stop, started = {"at": None}, threading.Event()

        def joiner():
            if not started.wait(120):
                raise AssertionError("the first members did not reach step 5")
            return train_until(ns[2].data_dir, stop, started, fresh=True)

        outs = nodes.run_threads([lambda d=nd.data_dir: train_until(d, stop, started, pause=0.02) for nd in ns[:2]]
                                 + [joiner], timeout=240)
        a, b, c = outs
        end = stop["at"]
        self.assertEqual([o["end"] for o in outs], [end] * 3)
        self.assertGreaterEqual(c["entry"], 5)
        self.assertIsNotNone(c["loaded"], "the joiner got no checkpoint")
        self.assertEqual(c["loaded"]["step"], c["entry"])
        self.assertEqual(c["worlds"], [3] * 10)
        # The joiner's LR scheduler came with the checkpoint: it counts the
        # steps from 0 like the members'.
        self.assertEqual(c["sched"]["last_epoch"], end)
        self.assertEqual(c["sched"], a["sched"])
        self.assertEqual(a["worlds"], [2] * c["entry"] + [3] * 10)
        # Every member ends bit-identical, and equal to plain torch: every
        # step's global batch was applied exactly once.
        assert_identical(self, outs)
        parts = applied_samples(outs, a)
        self.assertEqual(parts, {s: list(range(B)) for s in range(end)})
        assert_params_close(self, a["params"], reference(end))


class RejoinTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.root = tmp.name

    def test_excluded_trainer_rejoins(self):
        # A trainer that stalls past --trainer-timeout is excluded; the other
        # member goes on alone with the whole batch; the stalled one gets
        # not_member, joins again and loads the checkpoint of its new entry
        # step. The stalled step applies only the other member's share; every
        # other step's batch is averaged exactly once.
        ns = nodes.cluster_for(self, self.root, 2, "--trainer-timeout", "2s")
        stop, started = {"at": None}, threading.Event()
        a, b = nodes.run_threads([
            lambda: train_until(ns[0].data_dir, stop, started, stall_at=5, stall=4.5),
            lambda: train_until(ns[1].data_dir, stop, started, pause=0.02),
        ], timeout=240)
        end = stop["at"]
        self.assertEqual((a["end"], b["end"]), (end, end))
        self.assertGreaterEqual(a["rejoins"], 1)
        entry, ckpt = a["rejoined"][-1]
        self.assertGreater(entry, 5)
        self.assertIsNotNone(ckpt, "the rejoined trainer got no checkpoint")
        self.assertEqual(ckpt["step"], entry)
        self.assertIn(1, b["worlds"])  # b trained alone while a was out
        self.assertEqual(b["worlds"][-10:], [2] * 10)
        assert_identical(self, [a, b])
        parts = applied_samples([a, b], b)
        self.assertEqual(sorted(parts), list(range(end)))
        for s in range(end):
            if s != 5:
                self.assertEqual(parts[s], list(range(B)), f"samples applied at step {s}")
        b5 = next(list(part) for step, _, _, part in b["used"] if step == 5)
        self.assertEqual(parts[5], b5)  # b's share only
        self.assertLess(len(b5), B)
        assert_params_close(self, a["params"], reference(end, parts))

    def test_node_restart_mid_training(self):
        # a's node is SIGKILLed while a trains and restarted on the same data
        # dir: a's step fails with NodeConnectionLost, the optimizer
        # reconnects, joins the mesh again and loads the checkpoint; b and c
        # went on without it. The members end identical, equal to plain torch
        # over the samples each round averaged.
        ns = nodes.cluster_for(self, self.root, 3)
        stop, started = {"at": None}, threading.Event()
        restarted = []

        def killer():
            if not started.wait(120):
                raise AssertionError("the members did not reach step 5")
            ns[0].kill()
            time.sleep(0.5)
            nd = nodes.Node(ns[0].data_dir, "--min-members", "3", "--join", ns[1].addr)
            restarted.append(nd)
            self.addCleanup(nd.stop)

        a, b, c, _ = nodes.run_threads([
            lambda: train_until(ns[0].data_dir, stop, started, reconnect=120),
            lambda: train_until(ns[1].data_dir, stop, started, pause=0.02),
            lambda: train_until(ns[2].data_dir, stop, started, pause=0.02),
            killer,
        ], timeout=240)
        end = stop["at"]
        self.assertEqual((a["end"], b["end"], c["end"]), (end, end, end))
        self.assertEqual(a["rejoins"], 1)
        entry, ckpt = a["rejoined"][0]
        self.assertIsNotNone(ckpt, "the rejoined trainer got no checkpoint")
        self.assertEqual(ckpt["step"], entry)
        self.assertEqual(restarted[0].id, ns[0].id)
        self.assertIn(2, b["worlds"])  # b and c trained without a
        self.assertEqual(b["worlds"][-10:], [3] * 10)
        assert_identical(self, [a, b, c])
        parts = applied_samples([a, b, c], b)
        self.assertEqual(sorted(parts), list(range(end)))
        partial = [s for s in range(end) if parts[s] != list(range(B))]
        self.assertLessEqual(len(partial), 1, partial)  # at most the round a's node died in
        assert_params_close(self, a["params"], reference(end, parts))


class ResumeTest(unittest.TestCase):
    def test_resume_after_whole_mesh_restart(self):
        # A 1-node mesh trains 10 steps saving every 5, then node and
        # trainer stop. Restarted, a trainer with resume=True goes on from
        # step 10 with the saved state; one without would start at 0.
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        d = os.path.join(tmp.name, "0")

        def run(steps, resume):
            model = make_model()
            with ringmesh.Client(d, timeout=60) as client:
                opt = rt.DistributedOptimizer(make_optimizer(model), model, client, join_timeout=60,
                                              checkpoint_every=5, resume=resume)
                m = opt.join()
                while opt.next_step < steps:
                    x, y = batch(opt.next_step)
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    self.assertTrue(opt.step(batch_size=len(x)))
                opt.close()
            return m, [p.detach().clone() for p in model.parameters()]

        nd = nodes.Node(d, "--min-members", "1")
        m, _ = run(10, resume=True)  # nothing to resume yet
        self.assertEqual(m.step, 0)
        self.assertIsNone(m.checkpoint)
        nd.stop()
        self.assertEqual(nd.proc.returncode, 0)
        nd = nodes.Node(d, "--min-members", "1")
        self.addCleanup(nd.stop)
        m, params = run(20, resume=True)
        self.assertEqual(m.step, 10)
        self.assertEqual(m.checkpoint["step"], 10)
        assert_params_close(self, params, reference(20))
