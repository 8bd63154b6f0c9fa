"""All-reduce of numpy arrays and torch tensors across 3 real nodes, one
trainer thread with its own Client per node: results match a numpy
reference and are bit-identical on every member."""

import tempfile
import unittest

import numpy as np
import torch

import ringmesh

from . import nodes

N = 1000 * 3 + 7  # not divisible by the member count
WEIGHTS = [1.0, 2.0, 5.0]


def contribution(i: int, step: int) -> np.ndarray:
    return np.random.default_rng(1000 * step + i).standard_normal(N).astype(np.float32)


def trainer(data_dir: str, i: int):
    """Runs the same schedule of all-reduces on every member; returns the
    bytes of each result."""
    out = {}
    with ringmesh.Client(data_dir, timeout=60) as c:
        step = c.join(timeout=60).step
        members = None

        def check(resp, step):
            nonlocal members
            assert resp.step == step, (resp.step, step)
            assert resp.next_step == step + 1
            if members is None:
                members = resp.members
            assert resp.members == members, (resp.members, members)
            return step + 1

        # 0: sum of a numpy array living in shared memory (no copy).
        a = c.shared_array(N)
        a[:] = contribution(i, 0)
        step = check(c.allreduce(a, step, reduce="sum"), step)
        out["sum_shared"] = a.tobytes()
        # 1: mean of an ordinary numpy array (staged through shared memory).
        b = contribution(i, 1)
        step = check(c.allreduce(b, step, reduce="mean"), step)
        out["mean_numpy"] = b.tobytes()
        # 2: weighted mean of a torch tensor (staged), 2-D.
        t = torch.from_numpy(contribution(i, 2).copy()[: 3 * 1000]).view(3, 1000)
        r = c.allreduce(t, step, reduce="wmean", weight=WEIGHTS[i])
        assert abs(r.total_weight - sum(WEIGHTS)) < 1e-9, r.total_weight
        step = check(r, step)
        out["wmean_torch"] = t.numpy().tobytes()
        # 3: a torch tensor in shared memory (no copy).
        s = c.shared_tensor(N)
        s.copy_(torch.from_numpy(contribution(i, 3)))
        step = check(c.allreduce(s, step, reduce="sum"), step)
        out["sum_shared_torch"] = s.numpy().tobytes()
        # 4: a float64 array goes through float32.
        d = contribution(i, 4).astype(np.float64)
        step = check(c.allreduce(d, step, reduce="sum"), step)
        out["sum_float64"] = d.tobytes()
        # 5: a slice of a shared array: only that range changes.
        a[:] = contribution(i, 5)
        step = check(c.allreduce(a[100:1100], step, reduce="sum"), step)
        out["slice"] = a.tobytes()
        # 6: bfloat16 on the wire, float32 accumulation.
        w = contribution(i, 6)
        step = check(c.allreduce(w, step, reduce="mean", wire="bfloat16"), step)
        out["mean_bf16"] = w.tobytes()
        out["members"] = members
        out["self"] = c.self_id
    return out


class AllReduceTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.nodes = nodes.cluster_for(self, tmp.name, 3)

    def test_numpy_and_torch_three_nodes(self):
        outs = nodes.run_threads([lambda nd=nd, i=i: trainer(nd.data_dir, i) for i, nd in enumerate(self.nodes)])
        members = outs[0]["members"]
        self.assertEqual(sorted(members), sorted(nd.id for nd in self.nodes))
        for o in outs:
            self.assertEqual(o["members"], members)

        # Bit-identical results on every member.
        for key in ["sum_shared", "mean_numpy", "wmean_torch", "sum_shared_torch", "sum_float64", "mean_bf16"]:
            for i in (1, 2):
                self.assertEqual(outs[i][key], outs[0][key], f"{key}: member {i} differs from member 0")
        for i in (1, 2):
            self.assertEqual(outs[i]["slice"][400:4400], outs[0]["slice"][400:4400], f"slice: member {i} differs")

        def got(key, dtype=np.float32):
            return np.frombuffer(outs[0][key], dtype=dtype)

        c = {s: np.stack([contribution(i, s) for i in range(3)]).astype(np.float64) for s in range(7)}
        tol = dict(rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got("sum_shared"), c[0].sum(0), **tol)
        np.testing.assert_allclose(got("mean_numpy"), c[1].mean(0), **tol)
        w = np.array(WEIGHTS)[:, None]
        np.testing.assert_allclose(got("wmean_torch"), (c[2][:, :3000] * w).sum(0) / w.sum(), **tol)
        np.testing.assert_allclose(got("sum_shared_torch"), c[3].sum(0), **tol)
        np.testing.assert_allclose(got("sum_float64", np.float64), c[4].sum(0), **tol)
        sl = got("slice")
        np.testing.assert_allclose(sl[100:1100], c[5][:, 100:1100].sum(0), **tol)
        # Outside the slice each member keeps its own values.
        for i, o in enumerate(outs):
            own = np.frombuffer(o["slice"], dtype=np.float32)
            np.testing.assert_array_equal(own[:100], contribution(i, 5)[:100])
            np.testing.assert_array_equal(own[1100:], contribution(i, 5)[1100:])
        np.testing.assert_allclose(got("mean_bf16"), c[6].mean(0), rtol=2e-2, atol=2e-2)
        self.assertFalse(np.array_equal(got("mean_bf16"), c[6].mean(0).astype(np.float32)),
                         "bfloat16 wire left no rounding trace: was it float32?")
