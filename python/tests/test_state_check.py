"""State checks catch a member whose model silently diverged (issue 25
item 2, "Nothing would have noticed").

Three hosts train one model through three real nodes. Once, mid-run, one
host's trainer changes its weights outside the optimizer (what a bug, a bit
flip or a stray in-place op does); nothing in the all-reduce notices, since
every member still applies the same averaged gradients to its own weights.
With state checks (``check_every``) the members compare a hash of their
state through the mesh every few steps: the perturbed host is found in the
minority, its node says so (an ERROR in its log, ``state_check`` in
``ringmesh status --json``, ``ringmesh_state_checks_total{result="diverged"}``
and ``ringmesh_state_diverged`` in its metrics), its trainer logs an error
and re-syncs from the mesh's checkpoint, and every host ends with one
parameter hash. With ``check_every=0`` the perturbed host trains on with
its own model to the end.
"""

import hashlib
import logging
import os
import tempfile
import threading
import time
import unittest
import urllib.request

import torch
import torch.nn.functional as F

import ringmesh
import ringmesh.torch as rt

from . import nodes

torch.set_num_threads(1)

STEPS = 48
CHECK = 4
PERTURB_AT = 10  # the perturbed host changes its weights before computing this step
B = 24
TEACHER = torch.randn(8, 4, generator=torch.Generator().manual_seed(7))


def batch(step, sl=slice(None)):
    g = torch.Generator().manual_seed(2000 + step)
    x = torch.randn(B, 8, generator=g)
    return x[sl], (x @ TEACHER).argmax(1)[sl]


def make_model():
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def digest(model) -> str:
    h = hashlib.sha256()
    for t in list(model.parameters()) + list(model.buffers()):
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Records(logging.Handler):
    """The ringmesh log records of every trainer thread."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self.mu = threading.Lock()

    def emit(self, record):
        with self.mu:
            self.records.append((record.thread, record.levelno, record.getMessage()))

    def of(self, thread, level=logging.ERROR):
        with self.mu:
            return [m for t, lv, m in self.records if t == thread and lv >= level]


def trainer(data_dir, perturb, check_every):
    model = make_model()
    client = ringmesh.Client(data_dir, timeout=60)
    opt = rt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, client,
                                  join_timeout=60, check_every=check_every)
    skipped, perturbed = 0, False
    try:
        opt.join()
        while opt.next_step < STEPS:
            if perturb and not perturbed and opt.next_step >= PERTURB_AT:
                perturbed = True
                with torch.no_grad():
                    model[0].weight.add_(0.01)  # outside the optimizer: the mesh does not see it
            x, y = batch(opt.next_step, opt.shard(B))
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if not opt.step(batch_size=len(x)):
                skipped += 1
            time.sleep(0.03)  # steps of tens of ms, as a real model's: the heartbeat carries the hashes
        return dict(self=client.self_id, thread=threading.get_ident(), digest=digest(model), resyncs=opt.resyncs,
                    skipped=skipped, state_check=opt.state_check, perturbed=perturbed)
    finally:
        opt.close()
        client.close()


def metrics(st) -> str:
    with urllib.request.urlopen(f"http://{st['metrics_addr']}/metrics", timeout=10) as r:
        return r.read().decode()


class StateCheckTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.root = tmp.name
        self.records = Records()
        lg = logging.getLogger("ringmesh")
        lg.addHandler(self.records)
        self.addCleanup(lg.removeHandler, self.records)

    def run_mesh(self, name, check_every):
        ns = nodes.cluster_for(self, os.path.join(self.root, name), 3, "--metrics-addr", "127.0.0.1:0")
        # The perturbed host is not the one with the lowest peer ID (it
        # would save the checkpoints), so the test also sees who serves it.
        bad = sorted(ns, key=lambda nd: nd.id)[1]
        outs = nodes.run_threads([lambda nd=nd: trainer(nd.data_dir, nd is bad, check_every) for nd in ns],
                                 timeout=240)
        by_id = {o["self"]: o for o in outs}
        return ns, bad, by_id

    def test_diverged_member_is_detected_and_resyncs(self):
        ns, bad, outs = self.run_mesh("check", CHECK)
        b = outs[bad.id]
        self.assertTrue(b["perturbed"])

        # The trainer said so, loudly, and re-synced from the mesh.
        errors = self.records.of(b["thread"])
        self.assertTrue(any("differs from the mesh's" in m for m in errors), f"no divergence error logged: {errors}")
        self.assertTrue(any("re-synced from the mesh's checkpoint of step" in m for m in errors),
                        f"no re-sync logged: {errors}")
        self.assertGreaterEqual(b["resyncs"], 1)
        self.assertGreaterEqual(b["skipped"], 1, "the re-sync did not report the step as not applied")

        # The node said so: log, status (JSON and text) and metrics.
        st = nodes.status(bad.data_dir)
        sc = st["state_check"]
        self.assertGreaterEqual(sc["checks"]["diverged"], 1, sc)
        self.assertGreaterEqual(sc["resyncs"], 1, sc)
        self.assertFalse(sc["diverged"], f"still diverged after the re-sync: {sc}")
        self.assertIn("STATE DIVERGED", bad.log_tail(200000))
        m = metrics(st)
        self.assertRegex(m, r'ringmesh_state_checks_total\{result="diverged"\} [1-9]')
        self.assertRegex(m, r"ringmesh_state_resyncs_total [1-9]")
        self.assertRegex(m, r"ringmesh_state_diverged 0")
        text = nodes.subprocess.run([nodes.binary(), "status", "--data-dir", bad.data_dir], capture_output=True,
                                    timeout=10, check=True).stdout.decode()
        self.assertIn("state check:", text)
        self.assertRegex(text, r"state check: .*checks: \d+ agree, [1-9]\d* diverged, \d+ unchecked; re-syncs: [1-9]")

        # The others agreed and were never told to re-sync.
        for nd in ns:
            if nd is bad:
                continue
            o = outs[nd.id]
            self.assertEqual(o["resyncs"], 0, nd.id)
            self.assertEqual(self.records.of(o["thread"]), [], nd.id)
            sc = nodes.status(nd.data_dir)["state_check"]
            self.assertEqual(sc["checks"]["diverged"], 0, sc)
            self.assertGreaterEqual(sc["checks"]["agree"], 1, sc)
            log = nd.log_tail(200000)
            self.assertNotIn("STATE DIVERGED", log)
            self.assertIn("members hold another model state than the majority", log)
            self.assertIn(bad.id[-6:], log.split("members hold another model state", 1)[1].split("\n", 1)[0])

        # One model on every host.
        self.assertEqual(len({o["digest"] for o in outs.values()}), 1,
                         {k[-6:]: o["digest"] for k, o in outs.items()})

    def test_off_trains_on_diverged(self):
        ns, bad, outs = self.run_mesh("off", 0)
        self.assertEqual(outs[bad.id]["resyncs"], 0)
        self.assertEqual(nodes.status(bad.data_dir)["state_check"]["reported"], 0)
        others = {o["digest"] for i, o in outs.items() if i != bad.id}
        self.assertEqual(len(others), 1)
        self.assertNotIn(outs[bad.id]["digest"], others, "the perturbed host ended with the others' model unchecked")


if __name__ == "__main__":
    unittest.main()
