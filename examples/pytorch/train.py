#!/usr/bin/env python3
"""Data-parallel PyTorch training over a ringmesh mesh: a small MLP learns a
synthetic task (labels from a fixed random linear "teacher"), so nothing is
downloaded and it runs on CPU in seconds.

One host:

    make build
    bin/ringmesh node --data-dir /tmp/rm0 &
    PYTHONPATH=python /usr/bin/python3 examples/pytorch/train.py --data-dir /tmp/rm0

Several hosts: the first node creates the mesh (and its secret), `ringmesh
token` prints the join string, and every other node joins with it (a node
without the mesh's secret cannot connect at all):

    host1$ ringmesh node --data-dir /var/lib/ringmesh --min-members 2
    host1$ ringmesh token --data-dir /var/lib/ringmesh      # prints rm1.eyJ...
    host2$ ringmesh node --data-dir /var/lib/ringmesh --min-members 2 --join rm1.eyJ...
    hostN$ python3 examples/pytorch/train.py --data-dir /var/lib/ringmesh

`--min-members N` makes the first N nodes start together at step 0. Every
host computes the same global batch of --batch samples for each step and
takes its share by rank; gradients are averaged with the mean weighted by
each host's share, so the model trains exactly as one process with the whole
batch would. A host that starts later, or restarts after a crash, joins at a
step boundary and first loads the checkpoint a member saves for it; a host
that dies is dropped and the others go on; when a host's node restarts, its
trainer reconnects and rejoins (--reconnect-timeout). After the whole mesh
was stopped, --resume starts from the newest checkpoint instead of step 0.
Each host prints the hash of its parameters at the end: all live hosts print
the same one.

The Python package installs with `pip install ./python` (numpy; torch is the
"torch" extra) or is used in place with PYTHONPATH=python.
"""

import argparse
import hashlib
import logging
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import ringmesh  # noqa: E402
import ringmesh.torch as rt  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("RINGMESH_DATA_DIR"),
                   help="the local node's data dir (env RINGMESH_DATA_DIR)")
    p.add_argument("--steps", type=int, default=300, help="train until this step")
    p.add_argument("--batch", type=int, default=256, help="global batch size (split among the members)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=1, help="seeds the model, the teacher and the data")
    p.add_argument("--checkpoint-every", type=int, default=100, help="the first member saves every N steps (0: only for joiners)")
    p.add_argument("--resume", action="store_true", help="start from the newest checkpoint the node knows (restarting a whole mesh)")
    p.add_argument("--reconnect-timeout", type=float, default=120, help="seconds to wait for a restarted local node (0: exit)")
    p.add_argument("--wire", default=None, choices=["float32", "bfloat16", "float16"], help="all-reduce wire format")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--log-every", type=int, default=20)
    args = p.parse_args()
    if not args.data_dir:
        p.error("--data-dir is required (the directory the local `ringmesh node` runs with)")
    return args


IN, OUT = 32, 10


class Task:
    """The synthetic task: inputs ~ N(0, 1), labels = argmax of a fixed
    random linear teacher. Step k's global batch depends only on (seed, k),
    so every host builds the same one."""

    def __init__(self, seed: int, batch: int):
        self.teacher = torch.randn(IN, OUT, generator=torch.Generator().manual_seed(seed))
        self.seed, self.batch = seed, batch

    def global_batch(self, step: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        x = torch.randn(self.batch, IN, generator=g)
        y = (x @ self.teacher).argmax(1)
        return x, y


def make_model(seed: int, hidden: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, OUT))


def param_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> int:
    args = parse_args()
    # ringmesh.torch says when it joins, loads a checkpoint, rejoins after a
    # peer died or waits for its node: show it.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    task = Task(args.seed, args.batch)
    model = make_model(args.seed, args.hidden).to(args.device)

    try:
        client = ringmesh.Client(args.data_dir)
        try:
            return train(args, task, model, client)
        finally:
            client.close()
    except ringmesh.RingmeshConnectionError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1


def train(args, task: Task, model: torch.nn.Module, client: ringmesh.Client) -> int:
    opt = rt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9), model, client,
                                  wire=args.wire, checkpoint_every=args.checkpoint_every, resume=args.resume,
                                  reconnect_timeout=args.reconnect_timeout)
    m = opt.join()
    print(f"joined at step {m.step}: rank {m.rank} of {m.world}"
          + (f", loaded checkpoint of step {m.checkpoint['step']}" if m.checkpoint else ""), flush=True)

    t0, samples = time.monotonic(), 0
    while opt.next_step < args.steps:
        step = opt.next_step
        x, y = task.global_batch(step)
        mine = opt.shard(args.batch)
        x, y = x[mine].to(args.device), y[mine].to(args.device)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) if len(x) else None
        if loss is not None:
            loss.backward()
        if not opt.step(batch_size=len(x)):
            print(f"rejoined at step {opt.next_step} ({opt.world} members)", flush=True)
            continue
        samples += len(x)
        if step % args.log_every == 0 or opt.next_step == args.steps:
            rate = samples / max(time.monotonic() - t0, 1e-9)
            print(f"step {step:5d}  loss {loss.item() if loss is not None else float('nan'):.4f}  "
                  f"members {len(opt.last.members)}  rank {opt.rank}  {rate:8.0f} samples/s"
                  + (f"  (attempts {opt.last.attempts})" if opt.last.attempts > 1 else ""), flush=True)
    print(f"done at step {opt.next_step}: parameter hash {param_hash(model)}", flush=True)
    opt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
