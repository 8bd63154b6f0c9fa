"""Checkpoints are loaded without unpickling code, and saved safely.

``ringmesh.torch.load`` reads a checkpoint with torch.load(weights_only=True):
a poisoned file (a pickle whose __reduce__ runs a command) raises a clear
CheckpointError naming the file and runs nothing; what ``save`` writes
(model and optimizer state dicts, step, extra) loads back equal. ``save``
removes older files only once the node took the new one, keeps the newest
``keep`` by modification time and never the file just saved, and raises
when the node's answer is an error.
"""

import collections
import inspect
import os
import pickle
import shlex
import tempfile
import time
import unittest
from unittest import mock

import torch

import ringmesh
import ringmesh.torch as rt
from ringmesh.client import Response

from . import nodes

torch.set_num_threads(1)


class Touch:
    """Unpickling this runs ``touch MARKER`` through os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, ("touch " + shlex.quote(self.marker),)


class Opens:
    """Unpickling this creates MARKER with builtins.open."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def make_model(seed=1):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))


def trained(seed=1, opt_cls=torch.optim.SGD, **kw):
    """A model and optimizer a few steps in (so the optimizer has state)."""
    model = make_model(seed)
    opt = opt_cls(model.parameters(), **(kw or {"lr": 0.1, "momentum": 0.9}))
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(6, 4, generator=g)).pow(2).sum().backward()
        opt.step()
    return model, opt


def params(model):
    return [t.clone() for t in model.state_dict().values()]


class FakeClient:
    """Answers checkpoint_save with ``answer`` (a Response) or raises it."""

    def __init__(self, data_dir, answer):
        self.data_dir = data_dir
        self.answer = answer
        self.saved = []

    def checkpoint_save(self, path, step):
        self.saved.append((path, step, os.path.exists(path)))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


class SafeLoadTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        self.marker = os.path.join(self.dir, "pwned")
        self.path = os.path.join(self.dir, "step-000000000001.pt")

    def hostile_state(self, payload):
        return {"format": rt.CHECKPOINT_FORMAT, "step": 1, "model": {"0.weight": payload}, "optimizer": None,
                "extra": {}}

    def assert_refused(self, why=None):
        model = make_model()
        before = params(model)
        with self.assertRaises(ringmesh.CheckpointError) as cm:
            rt.load(self.path, model)
        msg = str(cm.exception)
        self.assertIn(self.path, msg)
        self.assertIn("is not a plain-tensor checkpoint", msg)
        if why:
            self.assertIn(why, msg)
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual(cm.exception.path, self.path)
        self.assertFalse(os.path.exists(self.marker), "the hostile checkpoint ran code")
        for a, b in zip(params(model), before):
            self.assertTrue(torch.equal(a, b))
        return msg

    def test_payload_runs_with_plain_torch_load(self):
        # Control: the payloads are live (plain unpickling runs them).
        for payload in (Touch, Opens):
            marker = os.path.join(self.dir, f"control-{payload.__name__}")
            path = os.path.join(self.dir, f"control-{payload.__name__}.pt")
            torch.save(self.hostile_state(payload(marker)), path)
            kw = {"weights_only": False} if "weights_only" in inspect.signature(torch.load).parameters else {}
            ran = torch.load(path, **kw)["model"]["0.weight"]
            if hasattr(ran, "close"):
                ran.close()
            self.assertTrue(os.path.exists(marker), payload.__name__)

    def test_hostile_torch_save_refused(self):
        for payload, name in ((Touch, "system"), (Opens, "open")):
            with self.subTest(payload=payload.__name__):
                torch.save(self.hostile_state(payload(self.marker)), self.path)
                msg = self.assert_refused()
                self.assertIn(name, msg)  # the global it would have called
                self.assertNotIn("weights_only` set to `False`", msg)  # no advice to load it unsafely

    def test_hostile_whole_file_refused(self):
        # The payload is the whole pickle, not nested in a checkpoint dict.
        torch.save(Touch(self.marker), self.path)
        self.assert_refused()

    def test_plain_pickle_refused(self):
        with open(self.path, "wb") as f:
            pickle.dump(self.hostile_state(Touch(self.marker)), f)
        self.assert_refused("not a torch.save zip archive")

    def test_legacy_torch_save_refused(self):
        torch.save(self.hostile_state(Touch(self.marker)), self.path, _use_new_zipfile_serialization=False)
        self.assert_refused("not a torch.save zip archive")

    def test_torchscript_archive_refused(self):
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), self.path)
        self.assert_refused("TorchScript")

    def test_not_a_ringmesh_checkpoint(self):
        torch.save({"model": make_model().state_dict()}, self.path)
        with self.assertRaises(ringmesh.CheckpointError) as cm:
            rt.load(self.path, make_model())
        self.assertIn(self.path, str(cm.exception))
        self.assertIn(rt.CHECKPOINT_FORMAT, str(cm.exception))

    def test_torch_without_weights_only_refuses(self):
        # An older torch.load (no weights_only) is never called: no fall
        # back to plain pickle.
        torch.save(self.hostile_state(Touch(self.marker)), self.path)
        called = []

        def old_load(f, map_location=None, pickle_module=pickle, **pickle_load_args):
            called.append(f)
            return pickle.load(open(f, "rb"))

        with mock.patch.object(rt.torch, "load", old_load):
            with self.assertRaises(RuntimeError) as cm:
                rt.load(self.path, make_model())
        msg = str(cm.exception)
        self.assertIn(self.path, msg)
        self.assertIn("weights_only", msg)
        self.assertEqual(called, [])
        self.assertFalse(os.path.exists(self.marker))

    def test_save_load_round_trip(self):
        for opt_cls, kw in [(torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                            (torch.optim.Adam, dict(lr=1e-3, betas=(0.8, 0.95), eps=1e-7))]:
            with self.subTest(opt=opt_cls.__name__):
                model, opt = trained(opt_cls=opt_cls, **kw)
                extra = {"lr": 0.25, "losses": [1.5, 0.75, float("inf")], "pair": (3, -0.5), "name": "run-1",
                         "done": False, "none": None, "od": collections.OrderedDict(a=1, b=2.5), 7: torch.arange(4),
                         "big": 2 ** 80}
                client = FakeClient(self.dir, Response(ok=True, step=12))
                resp = rt.save(model, opt, 12, client, extra=extra)
                self.assertTrue(resp.ok)
                path = os.path.join(self.dir, "trainer", "step-000000000012.pt")
                self.assertEqual(client.saved, [(path, 12, True)])
                # The file itself loads with the restricted unpickler.
                torch.load(path, map_location="cpu", weights_only=True)

                model2 = make_model(seed=2)
                opt2 = opt_cls(model2.parameters(), **kw)
                state = rt.load(path, model2, opt2)
                self.assertEqual(state["step"], 12)
                self.assertEqual(state["format"], rt.CHECKPOINT_FORMAT)
                got, want = state["extra"], extra
                self.assertEqual(set(got), set(want))
                for k in want:
                    if isinstance(want[k], torch.Tensor):
                        self.assertTrue(torch.equal(got[k], want[k]))
                    else:
                        self.assertEqual(got[k], want[k], k)
                        self.assertEqual(type(got[k]), type(want[k]), k)
                self.assertIsInstance(state["model"], collections.OrderedDict)
                self.assertEqual(state["model"]._metadata, model.state_dict()._metadata)
                for (k1, a), (k2, b) in zip(model2.state_dict().items(), model.state_dict().items()):
                    self.assertEqual(k1, k2)
                    self.assertTrue(torch.equal(a, b), k1)
                s1, s2 = opt2.state_dict(), opt.state_dict()
                self.assertEqual(s1["param_groups"], s2["param_groups"])
                self.assertEqual(set(s1["state"]), set(s2["state"]))
                for i in s2["state"]:
                    for k, v in s2["state"][i].items():
                        w = s1["state"][i][k]
                        self.assertTrue(torch.equal(w, v) if isinstance(v, torch.Tensor) else w == v, (i, k))

    def test_save_rejects_non_plain_extra(self):
        model, opt = trained()
        client = FakeClient(self.dir, Response(ok=True))
        for bad in ({"obj": Touch(self.marker)}, {"s": {1, 2}}, {"b": b"bytes"}, {1.5: "float key"},
                    {"__ringmesh_float__": "reserved"}):
            with self.subTest(bad=repr(bad)):
                with self.assertRaises((TypeError, ValueError)):
                    rt.save(model, opt, 3, client, extra=bad)
        self.assertEqual(client.saved, [])
        self.assertEqual(os.listdir(os.path.join(self.dir, "trainer")), [])


def step_files(d):
    return sorted(p for p in os.listdir(d) if p.startswith("step-") and p.endswith(".pt"))


class SaveRotationTest(unittest.TestCase):
    """save() against a real node: old files go only after the node took the
    new one, by modification time, never the one just saved."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        cls.node = nodes.Node(os.path.join(cls.tmp.name, "node"), "--min-members", "1")

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.tmp.cleanup()

    def setUp(self):
        self.client = ringmesh.Client(self.node.data_dir, timeout=60)
        self.addCleanup(self.client.close)
        self.dir = tempfile.mkdtemp(prefix="ckpt-", dir=self.tmp.name)

    def previous_run(self, steps, age=3600):
        """Files a previous run left: higher steps, older mtimes (the
        highest step the most recent of them)."""
        model, opt = trained(seed=3)
        now = time.time()
        for i, s in enumerate(sorted(steps)):
            p = os.path.join(self.dir, f"step-{s:012d}.pt")
            torch.save({"format": rt.CHECKPOINT_FORMAT, "step": s, "model": model.state_dict(), "optimizer": None,
                        "extra": {}}, p)
            t = now - age + i
            os.utime(p, (t, t))

    def test_second_run_keeps_new_file(self):
        self.previous_run([100, 200, 300])
        model, opt = trained()
        resp = rt.save(model, opt, 10, self.client, directory=self.dir, keep=2)
        self.assertTrue(resp.ok)
        self.assertEqual(resp.checkpoint["step"], 10)
        # The new file and the newest file of the old run stay.
        self.assertEqual(step_files(self.dir), ["step-000000000010.pt", "step-000000000300.pt"])
        state = rt.load(os.path.join(self.dir, "step-000000000010.pt"), make_model(seed=2))
        self.assertEqual(state["step"], 10)
        self.assertIn(10, [k["step"] for k in self.client.checkpoint_list()])

        # The run goes on: its own files are now the newest.
        time.sleep(0.01)
        rt.save(model, opt, 11, self.client, directory=self.dir, keep=2)
        self.assertEqual(step_files(self.dir), ["step-000000000010.pt", "step-000000000011.pt"])
        time.sleep(0.01)
        rt.save(model, opt, 12, self.client, directory=self.dir, keep=1)
        self.assertEqual(step_files(self.dir), ["step-000000000012.pt"])

    def test_just_saved_file_kept_even_when_others_look_newer(self):
        # Old files with mtimes in the future (clock skew): keep=1 still
        # keeps the file just saved, and only it.
        self.previous_run([50, 60], age=-3600)
        model, opt = trained()
        rt.save(model, opt, 5, self.client, directory=self.dir, keep=1)
        self.assertEqual(step_files(self.dir), ["step-000000000005.pt"])

    def test_keep_zero_removes_nothing(self):
        self.previous_run([100, 200])
        model, opt = trained()
        rt.save(model, opt, 1, self.client, directory=self.dir, keep=0)
        self.assertEqual(step_files(self.dir), ["step-000000000001.pt", "step-000000000100.pt",
                                                "step-000000000200.pt"])

    def test_error_answer_raises_and_removes_nothing(self):
        self.previous_run([100, 200, 300])
        model, opt = trained()
        before = step_files(self.dir)
        err = ringmesh.RingmeshError("internal", "save: disk full", "checkpoint_save")
        for answer in (err, Response(ok=False, code="internal", error="save: disk full")):
            with self.subTest(answer=type(answer).__name__):
                client = FakeClient(self.node.data_dir, answer)
                with self.assertRaises(ringmesh.RingmeshError) as cm:
                    rt.save(model, opt, 10, client, directory=self.dir, keep=1)
                self.assertIn("disk full", str(cm.exception))
                # The node was handed the complete file before anything else.
                self.assertEqual(client.saved, [(os.path.join(self.dir, "step-000000000010.pt"), 10, True)])
                # Nothing older was removed.
                self.assertEqual(step_files(self.dir), sorted(before + ["step-000000000010.pt"]))


if __name__ == "__main__":
    unittest.main()
