"""Smoke test of an installed ringmesh: a small model trains through a node.

    python -m ringmesh.torch.example                      # starts a throwaway node
    python -m ringmesh.torch.example --data-dir DIR       # the node running on DIR

Without ``--data-dir`` it starts ``ringmesh node`` (``--ringmesh``, default
the ``ringmesh`` on PATH or $RINGMESH_BIN) in a temporary directory,
listening on 127.0.0.1 only, trains ``--steps`` steps of a small MLP on a
synthetic task through it, prints the loss and the parameter hash, and stops
the node. Exit status 0 when the loss fell.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from .. import Client, NodeNotRunning
from . import DistributedOptimizer


def _start_node(binary: str, data_dir: str) -> subprocess.Popen:
    log = open(os.path.join(data_dir, "node.log"), "wb")
    proc = subprocess.Popen([binary, "node", "--data-dir", data_dir, "--listen", "/ip4/127.0.0.1/tcp/0",
                             "--no-mdns", "--no-dht", "--min-members", "1"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            Client(data_dir).close()
            return proc
        except NodeNotRunning:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                with open(os.path.join(data_dir, "node.log"), "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace")
                raise SystemExit(f"ringmesh node did not start:\n{tail}")
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def train(data_dir: str, steps: int, batch: int = 128, seed: int = 1) -> tuple:
    """Train through the node on data_dir; return (first loss, last loss,
    parameter hash)."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(16, 4, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    client = Client(data_dir)
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.2), model, client, join_timeout=60)
    losses = []
    try:
        while opt.next_step < steps:
            step_gen = torch.Generator().manual_seed(seed * 100003 + opt.next_step)
            x = torch.randn(batch, 16, generator=step_gen)
            y = (x @ teacher).argmax(1)
            idx = opt.shard(batch)
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            if opt.step(batch_size=idx.stop - idx.start):
                losses.append(loss.item())
    finally:
        opt.close()
        client.close()
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    return losses[0], losses[-1], h.hexdigest()[:16]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringmesh.torch.example", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data-dir", default=os.environ.get("RINGMESH_DATA_DIR"),
                   help="a running node's data dir (default: start a throwaway node)")
    p.add_argument("--ringmesh", default=os.environ.get("RINGMESH_BIN") or shutil.which("ringmesh"),
                   help="the ringmesh binary for the throwaway node (default $RINGMESH_BIN or ringmesh on PATH)")
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)
    proc = tmp = None
    data_dir = args.data_dir
    if not data_dir:
        if not args.ringmesh:
            p.error("no --data-dir and no ringmesh binary (put it on PATH, or pass --ringmesh or --data-dir)")
        tmp = tempfile.mkdtemp(prefix="ringmesh-example-")
        data_dir = os.path.join(tmp, "node")
        os.makedirs(data_dir)
        proc = _start_node(args.ringmesh, data_dir)
    try:
        first, last, digest = train(data_dir, args.steps)
    finally:
        if proc is not None:
            _stop(proc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    ok = last < first
    print(f"ringmesh example: {args.steps} steps, loss {first:.3f} -> {last:.3f}, parameter hash {digest}: "
          f"{'ok' if ok else 'the loss did not fall'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
