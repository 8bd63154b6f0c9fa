"""Convergence at equal samples: DiLoCo against every-step data-parallel
training of a small character-level transformer (issue 28).

    /usr/bin/python3 bench/diloco_convergence.py [--hosts 4] [--steps 1000]
        [--h-list 10,25,50] [--wires float32,int8,float4] [--runs SPEC]
        [--batch 4] [--ctx 64] [--d-model 96] [--layers 4] [--out DIR] [--json]

Each run starts --hosts `ringmesh node` processes on 127.0.0.1 (a fresh
mesh per run, production failure detection) and one trainer process per
node (one torch thread each). Every trainer takes --steps steps of its own
AdamW on batches of --batch sequences drawn from its own shard, so every
run sees the same samples: hosts x steps x batch sequences of --ctx bytes.

- "every": rt.DistributedOptimizer, the gradients averaged every step
  (float32 wire).
- "H:wire": rt.DiLoCo with sync_every=H and that wire (outer SGD lr 0.7,
  momentum 0.9, Nesterov; error feedback on the quantized wires).

The default runs are "every" and each H of --h-list with each wire of
--wires; --runs every,25:int8,50:float4 picks others. --steps must be a
multiple of every H.

Corpus: the Go standard library's non-test .go files under
$(go env GOROOT)/src (cmd, testdata and vendor left out), sorted by path;
every k-th file is taken, k chosen so the subset is about --corpus-mb. Of
those, every 10th file is held out for validation, the others go round
robin to the hosts' shards. Bytes are the tokens (vocabulary 256).

Model: a pre-LayerNorm causal transformer (GELU MLP of 4 x d_model, learned
positions, output tied to the input embedding), initialized from one seed
on every host. The defaults (4 layers, d_model 96, 4 heads, context 64:
478,272 parameters; batch 4) suit a 2-core machine, where 1,000 steps
with 4 hosts take 4-5 minutes a run. Its dense layers run as 1x1
convolutions over the tokens: Debian's python3-torch does its matrix
products on the reference BLAS (about 3 GFLOP/s a core) and its
convolutions on oneDNN (about 20); the arithmetic is the same.

Inner optimizer: AdamW (betas 0.9/0.95, weight decay 0.1), --lr after
--warmup steps of linear warm-up, cosine down to a tenth of it at --steps,
the same schedule for every run. The held-out loss (mean cross-entropy in
nats per byte over --val-seqs fixed windows of the validation files) is
evaluated by host 0 every --eval-every steps and at the end: on the
model's parameters for "every", on theta_global right after an outer step
for DiLoCo (the first one at or after each multiple of --eval-every).

Bytes: what a host sent for one round (the node's status
training.sent_bytes, 2(n-1)/n of the round's buffer on the wire) times
the rounds (steps, or outer steps). loop_s is the slowest host's time
from its join to its last step, host 0's evaluations included (eval_s:
while host 0 evaluates, every-step hosts wait in the next round and
DiLoCo hosts go on with their inner steps, so subtracting eval_s would
favour DiLoCo).

Prints one line per run and a table at the end (--json: one object per
run); writes DIR/curve-RUN.csv (loss against samples), DIR/summary.csv
and, when matplotlib imports, DIR/loss.png.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

NODE_ARGS = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"]


# ---- corpus ---------------------------------------------------------------

def go_sources(goroot: str) -> List[str]:
    """The standard library's non-test .go files, relative to GOROOT/src, sorted."""
    src = os.path.join(goroot, "src")
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        dirnames[:] = [d for d in dirnames
                       if d not in ("testdata", "vendor") and not (rel == "." and d == "cmd")]
        for f in filenames:
            if f.endswith(".go") and not f.endswith("_test.go"):
                out.append(os.path.normpath(os.path.join(rel, f)))
    return sorted(out)


def build_corpus(goroot: str, corpus_mb: float, hosts: int, out_dir: str) -> dict:
    """Writes out_dir/train-H.bin per host and out_dir/val.bin; returns
    what describes them."""
    files = go_sources(goroot)
    if not files:
        raise SystemExit(f"no .go files under {goroot}/src")
    src = os.path.join(goroot, "src")
    total = sum(os.path.getsize(os.path.join(src, f)) for f in files)
    stride = max(1, round(total / (corpus_mb * 1e6)))
    picked = files[::stride]
    shards: List[List[bytes]] = [[] for _ in range(hosts)]
    val: List[bytes] = []
    digest = hashlib.sha256()
    for k, f in enumerate(picked):
        with open(os.path.join(src, f), "rb") as fh:
            b = fh.read()
        digest.update(f.encode() + b"\0" + b)
        if k % 10 == 9:
            val.append(b)
        else:
            shards[(k - k // 10) % hosts].append(b)
    for h, parts in enumerate(shards):
        with open(os.path.join(out_dir, f"train-{h}.bin"), "wb") as fh:
            fh.write(b"".join(parts))
    with open(os.path.join(out_dir, "val.bin"), "wb") as fh:
        fh.write(b"".join(val))
    version = ""
    try:
        with open(os.path.join(goroot, "VERSION")) as fh:
            version = fh.readline().strip()
    except OSError:
        pass
    return {"goroot": goroot, "go": version, "files": len(picked), "stride": stride,
            "train_bytes": sum(len(b) for s in shards for b in s), "val_bytes": sum(len(b) for b in val),
            "sha256": digest.hexdigest()[:16]}


def goroot_dir(arg: Optional[str]) -> str:
    if arg:
        return arg
    try:
        out = subprocess.run(["go", "env", "GOROOT"], capture_output=True, text=True, check=True, timeout=60)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise SystemExit(f"go env GOROOT: {e}; pass --goroot")


# ---- nodes ----------------------------------------------------------------

def binary() -> str:
    path = os.environ.get("RINGMESH_BIN") or os.path.join(REPO, "bin", "ringmesh")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"ringmesh binary {path} missing: run `make build` or set RINGMESH_BIN")
    return path


def node_status(data_dir: str) -> Optional[dict]:
    try:
        out = subprocess.run([binary(), "status", "--data-dir", data_dir, "--json"], capture_output=True,
                             timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout) if out.returncode == 0 else None


class Node:
    """One `ringmesh node` process on 127.0.0.1 with its own data dir."""

    def __init__(self, data_dir: str, psk: str, *args: str):
        self.data_dir = data_dir
        os.makedirs(data_dir, exist_ok=True)
        self.log_path = os.path.join(data_dir, "node.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([binary(), "node", "--data-dir", data_dir, "--psk", psk, *NODE_ARGS, *args],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            st = node_status(data_dir)
            if st and st["self"]["addrs"]:
                self.addr = st["self"]["addrs"][0]
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"node {data_dir} did not start:\n{tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def start_mesh(root: str, n: int) -> List[Node]:
    psk = os.path.join(root, "mesh.psk")
    fd = os.open(psk, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("/key/swarm/psk/1.0.0/\n/base16/\n" + os.urandom(32).hex() + "\n")
    nodes: List[Node] = []
    try:
        nodes.append(Node(os.path.join(root, "0"), psk, "--min-members", str(n)))
        for i in range(1, n):
            nodes.append(Node(os.path.join(root, str(i)), psk, "--min-members", str(n), "--join", nodes[0].addr))
    except BaseException:
        for nd in nodes:
            nd.stop()
        raise
    return nodes


def tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


# ---- the trainer (one process per host) ------------------------------------

def make_model(cfg: dict):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Dense(nn.Module):
        """x @ W^T + b over the last dimension, as a 1x1 convolution over
        the B*T tokens (oneDNN; see the module doc)."""

        def __init__(self, n_in: int, n_out: int, std: float):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(n_out, n_in, 1) * std)
            self.bias = nn.Parameter(torch.zeros(n_out))

        def forward(self, x):
            lead = x.shape[:-1]
            y = F.conv1d(x.reshape(-1, x.shape[-1], 1), self.weight, self.bias)
            return y.view(*lead, -1)

    class Block(nn.Module):
        def __init__(self, d: int, heads: int, layers: int):
            super().__init__()
            self.heads = heads
            std, res_std = 0.02, 0.02 / math.sqrt(2 * layers)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = Dense(d, 3 * d, std), Dense(d, d, res_std)
            self.fc, self.out = Dense(d, 4 * d, std), Dense(4 * d, d, res_std)

        def forward(self, x, mask):
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-1, -2)) * (c // self.heads) ** -0.5
            a = a.masked_fill(mask[:t, :t], float("-inf")).softmax(-1)
            x = x + self.proj((a @ v).transpose(1, 2).reshape(b, t, c))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class CharLM(nn.Module):
        def __init__(self, d: int, layers: int, heads: int, ctx: int):
            super().__init__()
            self.tok = nn.Embedding(256, d)
            nn.init.normal_(self.tok.weight, std=0.02)
            self.pos = nn.Parameter(torch.randn(ctx, d) * 0.01)
            self.blocks = nn.ModuleList([Block(d, heads, layers) for _ in range(layers)])
            self.ln = nn.LayerNorm(d)
            self.mask = torch.ones(ctx, ctx, dtype=torch.bool).triu(1)  # not a buffer: nothing to sync

        def forward(self, x):
            h = self.tok(x) + self.pos[: x.shape[1]]
            for blk in self.blocks:
                h = blk(h, self.mask)
            h = self.ln(h)
            return F.conv1d(h.reshape(-1, h.shape[-1], 1), self.tok.weight.unsqueeze(-1)).view(*h.shape[:-1], 256)

    torch.manual_seed(cfg["seed"])
    return CharLM(cfg["d_model"], cfg["layers"], cfg["heads"], cfg["ctx"])


def lr_at(cfg: dict, step: int) -> float:
    peak, warm, total = cfg["lr"], cfg["warmup"], cfg["steps"]
    if step < warm:
        return peak * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def worker(cfg_path: str, host: int) -> int:
    import numpy as np
    import torch
    import torch.nn.functional as F

    import ringmesh
    import ringmesh.torch as rt

    torch.set_num_threads(1)
    with open(cfg_path) as f:
        cfg = json.load(f)
    run = cfg["run"]
    ctx, bsz = cfg["ctx"], cfg["batch"]
    shard = np.fromfile(os.path.join(cfg["corpus"], f"train-{host}.bin"), dtype=np.uint8)
    model = make_model(cfg)
    inner = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.95), weight_decay=0.1)

    def batch(step: int):
        """This host's batch for inner step ``step``: the same in every run."""
        rng = np.random.default_rng([cfg["seed"], host, step])
        offs = rng.integers(0, len(shard) - ctx - 1, size=bsz)
        xy = torch.from_numpy(np.stack([shard[o:o + ctx + 1] for o in offs]).astype(np.int64))
        return xy[:, :-1], xy[:, 1:]

    val = None
    if host == 0:
        vb = np.fromfile(os.path.join(cfg["corpus"], "val.bin"), dtype=np.uint8)
        offs = np.linspace(0, len(vb) - ctx - 1, cfg["val_seqs"]).astype(np.int64)
        val = torch.from_numpy(np.stack([vb[o:o + ctx + 1] for o in offs]).astype(np.int64))

    def evaluate() -> float:
        model.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(val), 64):
                xy = val[i:i + 64]
                logits = model(xy[:, :-1])
                total += F.cross_entropy(logits.reshape(-1, 256), xy[:, 1:].reshape(-1), reduction="sum").item()
        model.train()
        return total / (len(val) * ctx)

    client = ringmesh.Client(cfg["data_dirs"][host], timeout=600)
    if run["h"] == 0:
        opt = rt.DistributedOptimizer(inner, model, client, wire=run["wire"], join_timeout=300)
        h = 1
    else:
        opt = rt.DiLoCo(model, inner, client, sync_every=run["h"], wire=run["wire"], outer_lr=cfg["outer_lr"],
                        outer_momentum=0.9, nesterov=True, join_timeout=300)
        h = run["h"]
    curve, losses = [], []
    not_applied, eval_s = 0, 0.0

    def record(step: int):
        nonlocal eval_s
        t = time.perf_counter()
        v = evaluate()
        eval_s += time.perf_counter() - t
        tr = sum(losses) / len(losses) if losses else float("nan")
        losses.clear()
        curve.append({"step": step, "samples": step * bsz * cfg["hosts"], "val_loss": v, "train_loss": tr})

    try:
        opt.join()
        t0 = time.perf_counter()
        if host == 0:
            record(0)
        # The step index is the mesh's: rounds (every step) or outer steps
        # times H plus this period's inner steps.
        done = 0
        next_eval = cfg["eval_every"]
        while done < cfg["steps"]:
            for g in inner.param_groups:
                g["lr"] = lr_at(cfg, done)
            x, y = batch(done)
            opt.zero_grad()
            loss = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
            loss.backward()
            if not opt.step(batch_size=bsz):
                not_applied += 1
            losses.append(loss.item())
            done = opt.next_step if run["h"] == 0 else opt.outer_step * h + opt.inner_steps
            if host == 0 and done >= next_eval and (run["h"] == 0 or opt.inner_steps == 0):
                record(done)
                next_eval = (done // cfg["eval_every"] + 1) * cfg["eval_every"]
        if host == 0 and curve[-1]["step"] != done:
            record(done)
        loop_s = time.perf_counter() - t0
        rounds = opt.next_step if run["h"] == 0 else opt.outer_step
        training = client.status().get("training", {}) if host == 0 else {}
    finally:
        opt.close()
        client.close()
    res = {"host": host, "loop_s": loop_s, "eval_s": eval_s, "not_applied": not_applied, "rounds": rounds,
           "curve": curve, "training": training,
           "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    with open(os.path.join(cfg["run_dir"], f"result-{host}.json"), "w") as f:
        json.dump(res, f)
    return 0


# ---- the runs --------------------------------------------------------------

def parse_runs(a) -> List[dict]:
    if a.runs:
        specs = [s.strip() for s in a.runs.split(",") if s.strip()]
    else:
        specs = ([] if a.no_every_step else ["every"]) + [
            f"{h}:{w}" for h in a.h_list.split(",") for w in a.wires.split(",")]
    runs = []
    for s in specs:
        if s == "every":
            runs.append({"name": "every", "h": 0, "wire": "float32"})
            continue
        h, _, wire = s.partition(":")
        if not h.isdigit() or int(h) < 1 or not wire:
            raise SystemExit(f"run {s!r}: want 'every' or H:wire (25:int8)")
        if a.steps % int(h):
            raise SystemExit(f"run {s}: --steps {a.steps} is not a multiple of H={h} (equal samples)")
        runs.append({"name": f"H{h}-{wire}", "h": int(h), "wire": wire})
    return runs


def one_run(a, run: dict, corpus: str, out: str, scratch: str) -> dict:
    run_dir = os.path.join(out, run["name"])
    os.makedirs(run_dir, exist_ok=True)
    mesh_root = tempfile.mkdtemp(prefix="mesh-", dir=scratch)
    t_start = time.perf_counter()
    nodes = start_mesh(mesh_root, a.hosts)
    procs = []
    try:
        cfg = {"run": run, "hosts": a.hosts, "steps": a.steps, "batch": a.batch, "ctx": a.ctx,
               "d_model": a.d_model, "layers": a.layers, "heads": a.heads, "lr": a.lr, "warmup": a.warmup,
               "outer_lr": a.outer_lr, "seed": a.seed, "eval_every": a.eval_every, "val_seqs": a.val_seqs,
               "corpus": corpus, "run_dir": run_dir, "data_dirs": [nd.data_dir for nd in nodes]}
        cfg_path = os.path.join(run_dir, "config.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        for h in range(a.hosts):
            log = open(os.path.join(run_dir, f"trainer-{h}.log"), "wb")
            procs.append((subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", cfg_path,
                                            "--host", str(h)], stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True), log))
        deadline = time.monotonic() + a.run_timeout
        for p, _ in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
        failed = [h for h, (p, _) in enumerate(procs) if p.poll() != 0]
        if failed:
            h = failed[0]
            raise RuntimeError(f"run {run['name']}: trainers {failed} failed or ran past {a.run_timeout}s; "
                               f"trainer {h}:\n{tail(os.path.join(run_dir, f'trainer-{h}.log'))}")
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
        for nd in nodes:
            nd.stop()
        if not a.keep:
            shutil.rmtree(mesh_root, ignore_errors=True)
    run_s = time.perf_counter() - t_start
    res = []
    for h in range(a.hosts):
        with open(os.path.join(run_dir, f"result-{h}.json")) as f:
            res.append(json.load(f))
    r0 = res[0]
    tr = r0["training"]
    sent = int(tr.get("sent_bytes", 0))
    total_bytes = sent * r0["rounds"]
    with open(os.path.join(out, f"curve-{run['name']}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "samples", "val_loss", "train_loss"])
        for c in r0["curve"]:
            w.writerow([run["name"], c["step"], c["samples"], f"{c['val_loss']:.5f}", f"{c['train_loss']:.5f}"])
    return {"run": run["name"], "h": run["h"], "wire": run["wire"], "params": r0["params"],
            "val_loss": r0["curve"][-1]["val_loss"], "rounds": r0["rounds"],
            "wire_bytes": int(tr.get("wire_bytes", 0)), "sent_bytes_per_round": sent,
            "bytes_per_host": total_bytes, "bytes_per_step": total_bytes / a.steps,
            "loop_s": max(r["loop_s"] for r in res), "eval_s": r0["eval_s"], "run_s": run_s,
            "not_applied": sum(r["not_applied"] for r in res), "mode": tr.get("mode", ""),
            "curve": r0["curve"]}


def plot(out: str, results: List[dict]) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        c = r["curve"][1:]
        ax.plot([p["samples"] for p in c], [p["val_loss"] for p in c], label=r["run"], marker=".")
    ax.set_xlabel("global samples (sequences)")
    ax.set_ylabel("held-out loss (nats/byte)")
    ax.legend()
    path = os.path.join(out, "loss.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1000, help="inner steps per host (every run)")
    ap.add_argument("--batch", type=int, default=4, help="sequences per host per step")
    ap.add_argument("--ctx", type=int, default=64, help="sequence length in bytes")
    ap.add_argument("--d-model", type=int, default=96)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--outer-lr", type=float, default=0.7)
    ap.add_argument("--h-list", default="10,25,50")
    ap.add_argument("--wires", default="float32,int8,float4")
    ap.add_argument("--no-every-step", action="store_true")
    ap.add_argument("--runs", default="", help="comma list of 'every' and H:wire; overrides --h-list/--wires")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-seqs", type=int, default=256)
    ap.add_argument("--corpus-mb", type=float, default=3.0)
    ap.add_argument("--goroot", default="")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run-timeout", type=float, default=1800)
    ap.add_argument("--out", default="", help="where the CSVs go (default: a new directory under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' data dirs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--host", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.host)
    if a.d_model % a.heads:
        raise SystemExit(f"--d-model {a.d_model} is not a multiple of --heads {a.heads}")
    runs = parse_runs(a)
    binary()
    out = a.out or tempfile.mkdtemp(prefix="ringmesh-convergence-")
    os.makedirs(out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="ringmesh-convergence-nodes-")
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus, exist_ok=True)
    info = build_corpus(goroot_dir(a.goroot), a.corpus_mb, a.hosts, corpus)
    print(f"corpus: {info['go']} std library, {info['files']} files (every {info['stride']}th), "
          f"train {info['train_bytes']} bytes in {a.hosts} shards, val {info['val_bytes']} bytes, "
          f"sha256 {info['sha256']}", file=sys.stderr)
    print(f"config: hosts={a.hosts} steps={a.steps} batch={a.batch} ctx={a.ctx} d_model={a.d_model} "
          f"layers={a.layers} heads={a.heads} lr={a.lr} warmup={a.warmup} outer_lr={a.outer_lr} "
          f"samples={a.hosts * a.steps * a.batch} sequences ({a.hosts * a.steps * a.batch * a.ctx} bytes)",
          file=sys.stderr)
    results: List[dict] = []
    base: Dict[str, float] = {}
    try:
        for run in runs:
            r = one_run(a, run, corpus, out, scratch)
            results.append(r)
            if r["h"] == 0:
                base = {"val_loss": r["val_loss"], "bytes_per_step": r["bytes_per_step"]}
            if base:
                r["loss_ratio"] = r["val_loss"] / base["val_loss"]
                r["bytes_ratio"] = r["bytes_per_step"] / base["bytes_per_step"] if base["bytes_per_step"] else 0
            if a.json:
                print(json.dumps({k: v for k, v in r.items() if k != "curve"}), flush=True)
            else:
                print(f"convergence run={r['run']} params={r['params']} val_loss={r['val_loss']:.4f} "
                      f"ratio={r.get('loss_ratio', float('nan')):.4f} rounds={r['rounds']} "
                      f"bytes_per_host={r['bytes_per_host']} bytes_per_step={r['bytes_per_step']:.0f} "
                      f"loop_s={r['loop_s']:.1f} eval_s={r['eval_s']:.1f} run_s={r['run_s']:.1f} not_applied={r['not_applied']}",
                      flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        keys = ["run", "h", "wire", "params", "val_loss", "loss_ratio", "rounds", "wire_bytes",
                "sent_bytes_per_round", "bytes_per_host", "bytes_per_step", "bytes_ratio", "loop_s", "eval_s",
                "run_s", "not_applied"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in results:
            w.writerow(r)
    if not a.json:
        print("\n| run | held-out loss | / every-step | bytes per host | per inner step | / every-step | loop s |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['run']} | {r['val_loss']:.4f} | {r.get('loss_ratio', float('nan')):.4f} | "
                  f"{r['bytes_per_host']:,} | {r['bytes_per_step']:,.0f} | {r.get('bytes_ratio', float('nan')):.4g} | "
                  f"{r['loop_s']:.1f} |")
    png = plot(out, results)
    print(f"CSV in {out}" + (f", plot {png}" if png else " (no matplotlib: no plot)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
