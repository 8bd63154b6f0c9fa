"""torchrun on every host, one node per host: examples/pytorch/ddp.

- The ringmesh script differs from the plain torch DDP script in at most 5
  lines.
- 2 hosts x 2 local ranks, and a third host x 2 joining mid-run, end with
  the parameters and buffers of one process training on the same global
  batches (float tolerance), and every rank of every host bit-identical.
- run_local.sh (2 nodes x torchrun 2, one node SIGKILLed and restarted)
  ends with all ranks equal.
- A node reports how many local ranks its trainer speaks for.
"""

import difflib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import torch

from . import nodes

DDP_DIR = os.path.join(nodes.REPO, "examples", "pytorch", "ddp")
PLAIN = os.path.join(DDP_DIR, "train_ddp.py")
MESH = os.path.join(DDP_DIR, "train_ringmesh.py")
PYPATH = os.path.join(nodes.REPO, "python")


def torchrun_fix():
    """torch 1.13 on Python 3.11 cannot parse torchrun's default
    --redirects/--tee 0; stdout teed works (see run_local.sh)."""
    from torch.distributed.elastic.multiprocessing.api import Std
    return ["--redirects", "1", "--tee", "1"] if Std.from_str("0") is None else []


# HELD runs the example, holding after step HOLD-1 while a gate file exists.
HOLD = 16
HELD = """import os, runpy, sys, time
import ringmesh.torch as rt
step = rt.DistributedOptimizer.step
def held(self, *args, **kwargs):
    ok = step(self, *args, **kwargs)
    if ok and self.next_step == {hold}:
        while os.path.exists({gate!r}):
            time.sleep(0.05)
    return ok
rt.DistributedOptimizer.step = held
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


SLICED = """import runpy, sys
import ringmesh.torch as rt
rt.DistributedOptimizer._JOIN_SLICE = 0.5
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script, nproc, args, data_dir=None, cwd=None, **extra_env):
    """torchrun of script on this "host" (its own local rendezvous), in
    cwd when given."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYPATH, **extra_env)
    if data_dir:
        env["RINGMESH_DATA_DIR"] = data_dir
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *torchrun_fix(), script, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)


def finish(test, procs, timeout=300):
    outs = []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(deadline - time.monotonic(), 1))
            outs.append(out.decode())
            test.assertEqual(p.returncode, 0, outs[-1][-4000:])
    finally:
        for p in procs:
            kill_group(p)
    return outs


def kill_group(p):
    """SIGKILL torchrun and its workers (its session: they outlive it)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def rank_hashes(out):
    return re.findall(r"rank \d+: (params [0-9a-f]{16} buffers [0-9a-f]{16})", out)


class DDPExampleTest(unittest.TestCase):
    def test_diff_is_small(self):
        with open(PLAIN) as f:
            a = f.read().splitlines()
        with open(MESH) as f:
            b = f.read().splitlines()
        changed = [line for line in difflib.unified_diff(a, b, lineterm="", n=0)
                   if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        removed = sum(1 for line in changed if line.startswith("-"))
        added = len(changed) - removed
        self.assertLessEqual(max(added, removed), 5, "\n".join(changed))
        self.assertTrue(any("DistributedOptimizer" in line for line in changed))

    def test_documented_torchrun_command_runs(self):
        """The torchrun command the example's README gives for this torch
        (Debian 12's 1.13 needs --redirects 1 --tee 1) starts every local
        rank."""
        with open(os.path.join(DDP_DIR, "README.md")) as f:
            text = " ".join(f.read().split())
        m = re.search(r"`(torchrun --standalone --redirects 1 --tee 1 --nproc_per_node 8) train_ringmesh.py`", text)
        self.assertIsNotNone(m, "the README no longer gives the torchrun command for torch 1.13")
        args = m.group(1).split()[1:]
        args[args.index("8")] = "2"
        with tempfile.TemporaryDirectory(prefix="ringmesh-pytest-") as tmp:
            script = os.path.join(tmp, "ranks.py")
            with open(script, "w") as f:
                f.write("import os\nprint('started rank', os.environ['RANK'], flush=True)\n")
            r = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args, script],
                               capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
        self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-2000:])
        self.assertEqual(sorted(re.findall(r"started rank (\d)", r.stdout)), ["0", "1"], r.stdout)

    def test_run_local_shellcheck(self):
        if not shutil.which("shellcheck"):
            self.skipTest("shellcheck not installed (apt-get install shellcheck)")
        r = subprocess.run(["shellcheck", os.path.join(DDP_DIR, "run_local.sh")], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout)

    def test_local_ranks_match_one_process(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        args = ["--epochs", "1", "--batch", "64", "--seed", "3"]
        ref = os.path.join(tmp.name, "ref.pt")
        finish(self, [torchrun(PLAIN, 1, args + ["--out", ref])])

        ns = nodes.cluster(tmp.name, 2)
        late = nodes.Node(os.path.join(tmp.name, "2"), "--join", ns[0].addr)
        ns.append(late)
        for nd in ns:
            self.addCleanup(nd.stop)
        # The first two hosts hold after step HOLD-1 while the gate file
        # exists, so the third host joins a running mesh whatever the load.
        gate = os.path.join(tmp.name, "gate")
        open(gate, "w").close()
        wrapper = os.path.join(tmp.name, "held.py")
        with open(wrapper, "w") as f:
            f.write(HELD.format(gate=gate, hold=HOLD, script=MESH))
        outs = [os.path.join(tmp.name, f"out{i}.pt") for i in range(3)]
        procs = [torchrun(wrapper, 2, args + ["--out", outs[i]], ns[i].data_dir) for i in range(2)]
        self.addCleanup(lambda: [kill_group(p) for p in procs])
        deadline = time.monotonic() + 240

        def wait_for(what, cond):
            while not cond():
                self.assertLess(time.monotonic(), deadline, what)
                self.assertTrue(all(p.poll() is None for p in procs), f"a trainer exited while waiting for {what}")
                time.sleep(0.1)

        wait_for(f"the mesh at step {HOLD}", lambda: all(
            (nodes.status(nd.data_dir) or {}).get("rounds", {}).get("next_step", 0) == HOLD for nd in ns[:2]))
        # The joiner's rank 0 tells rank 1 every 0.5 s that it still waits
        # (60 s by default), so the wait below goes through that path.
        joiner = os.path.join(tmp.name, "joiner.py")
        with open(joiner, "w") as f:
            f.write(SLICED.format(script=MESH))
        procs.append(torchrun(joiner, 2, args + ["--out", outs[2]], late.data_dir, RINGMESH_LOG="debug"))
        wait_for("the third host's trainer to join", lambda: (nodes.status(late.data_dir) or {}).get(
            "rounds", {}).get("state") == "joining")
        time.sleep(2)
        os.unlink(gate)
        # While the third host trains, the mesh's status says its trainer
        # speaks for 2 local ranks.
        seen = None
        while seen is None and procs[2].poll() is None and time.monotonic() < deadline:
            for p in (nodes.status(ns[0].data_dir) or {}).get("rounds", {}).get("plan", []):
                if p["id"] == late.id and p.get("local_ranks"):
                    seen = p["local_ranks"]
            time.sleep(0.05)
        texts = finish(self, procs)
        self.assertEqual(seen, 2, "the running mesh's status did not show the joiner's 2 local ranks")
        hashes = [h for t in texts for h in rank_hashes(t)]
        self.assertEqual(len(hashes), 6, texts)
        self.assertEqual(len(set(hashes)), 1, hashes)
        self.assertIn("loaded checkpoint", texts[2])
        self.assertIn("local rank 0 still waits for the mesh", texts[2])

        want = torch.load(ref)
        worst = 0.0
        for path in outs:
            got = torch.load(path)
            self.assertEqual(sorted(got), sorted(want))
            for k in want:
                self.assertTrue(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-5),
                                f"{k}: max diff {(got[k] - want[k]).abs().max().item()}")
                worst = max(worst, (got[k].double() - want[k].double()).abs().max().item())
        print(f"\n3 hosts x 2 local ranks vs one process, 64 steps: max |diff| {worst:.3g}", file=sys.stderr)

    def test_rank_1_reports_rank_0s_cause(self):
        # No node runs on the data dir: local rank 0 cannot connect. Local
        # rank 1 must say why (rank 0's error), not only gloo's
        # "Connection closed by peer" when rank 0 exits.
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        script = os.path.join(tmp.name, "nonode.py")
        with open(script, "w") as f:
            f.write("""import os, torch, torch.distributed as dist
import ringmesh.torch as rt
dist.init_process_group("gloo")
model = torch.nn.Linear(4, 2)
opt = rt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)
try:
    opt.join()
except Exception as e:
    print(f"rank {os.environ['LOCAL_RANK']} raised: {e}", flush=True)
    raise
""")
        p = torchrun(script, 2, [], os.path.join(tmp.name, "no-node"))
        out, _ = p.communicate(timeout=120)
        text = out.decode("utf-8", "replace")
        self.assertNotEqual(p.returncode, 0, text)
        rank1 = [l for l in text.splitlines() if "rank 1 raised:" in l]
        self.assertTrue(rank1, f"local rank 1 did not raise from join:\n{text}")
        self.assertIn("local rank 0's join failed", rank1[0])
        self.assertIn("no-node", rank1[0], "rank 1's error does not carry rank 0's cause (the data dir)")

    def test_run_local(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        env = dict(os.environ, RINGMESH_BIN=nodes.binary(), RUN_DIR=tmp.name, PYTHON=sys.executable,
                   PYTHONPATH=PYPATH)
        r = subprocess.run([os.path.join(DDP_DIR, "run_local.sh"), "--epochs", "2", "--batchnorm"],
                           capture_output=True, text=True, timeout=400, env=env)
        if r.returncode != 0:
            logs = []
            for name in sorted(os.listdir(tmp.name)):
                if name.endswith(".log"):
                    with open(os.path.join(tmp.name, name), errors="replace") as f:
                        logs.append(f"==> {name} <==\n" + "".join(f.readlines()[-200:]))
            self.fail(f"run_local.sh exited {r.returncode}\n{r.stdout[-3000:]}\n" + "\n".join(logs))
        self.assertIn("SIGKILL node b", r.stdout)
        self.assertIn("node b restarted", r.stdout)
        self.assertRegex(r.stdout, r"all 4 ranks equal: params [0-9a-f]{16} buffers [0-9a-f]{16}")
        self.assertEqual(len(set(rank_hashes(r.stdout))), 1)


if __name__ == "__main__":
    unittest.main()
