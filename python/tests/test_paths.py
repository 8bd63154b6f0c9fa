"""The path a DistributedOptimizer's steps take to the mesh
(ringmesh.torch._paths): one of four, picked by choose_path from how the
trainer runs."""

import types
import unittest

import torch

import ringmesh.torch as rt
from ringmesh.torch import _paths


class FakeBuffer:
    def __init__(self, n):
        self.t = torch.zeros(n)

    def tensor(self):
        return self.t

    def close(self):
        pass


class FakeClient:
    data_dir = "/nonexistent"
    self_id = "x"

    def shared_buffer(self, n):
        return FakeBuffer(n)


class FakeOverlap:
    last_early = 0
    parts = [(0, 1), (1, 2)]


def fake_optimizer(local, lead=True):
    av = types.SimpleNamespace(params=[], views=[], bind_grads=True)
    group = types.SimpleNamespace(size=2) if local else None
    return types.SimpleNamespace(local=group, lead=lead, averager=av)


class ChoosePathTest(unittest.TestCase):
    def test_four_paths(self):
        for local, overlap, hooked, want in [
            (False, None, False, _paths.PlainPath),
            (False, None, True, _paths.PlainPath),  # one process needs no hook without overlap
            (False, FakeOverlap(), True, _paths.OverlapPath),
            (True, None, False, _paths.LocalPath),
            (True, None, True, _paths.LocalPath),
            (True, FakeOverlap(), True, _paths.LocalOverlapPath),
        ]:
            with self.subTest(local=local, overlap=overlap is not None, hooked=hooked):
                path = _paths.choose_path(fake_optimizer(local), overlap, hooked)
                self.assertIs(type(path), want)
                self.assertEqual(path.hooked, want is not _paths.PlainPath and (hooked or overlap is not None))

    def test_overlapped(self):
        self.assertEqual(_paths.choose_path(fake_optimizer(False)).overlapped, (0, 0))
        self.assertEqual(_paths.choose_path(fake_optimizer(False), FakeOverlap(), True).overlapped, (0, 2))
        # Local ranks other than 0 report the parts, none of them early.
        self.assertEqual(_paths.choose_path(fake_optimizer(True, lead=False), FakeOverlap(), True).overlapped, (0, 2))

    def test_only_overlap_unbinds_grads_on_rank_0(self):
        for local, lead, overlap, unbound in [(False, True, None, False), (False, True, FakeOverlap(), True),
                                              (True, True, FakeOverlap(), True), (True, False, FakeOverlap(), False)]:
            opt = fake_optimizer(local, lead)
            _paths.choose_path(opt, overlap, True).start()
            self.assertEqual(opt.averager.bind_grads, not unbound, (local, lead))

    def test_bare_model_takes_the_plain_path(self):
        model = torch.nn.Linear(4, 2)
        opt = rt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, FakeClient())
        self.addCleanup(opt.close)
        self.assertIs(type(opt._path), _paths.PlainPath)
        self.assertFalse(opt._hooked)
        self.assertEqual(opt.overlapped, (0, 0))


if __name__ == "__main__":
    unittest.main()
