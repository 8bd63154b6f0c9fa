"""Step time of a DDP model with and without overlap: one trainer per node.

    python3 bench/ddp_overlap.py --data-dir DIR (--overlap | --no-overlap)
        [--steps 12] [--warmup 3] [--batch 256] [--layers 24] [--width 1024]

Every host runs it against its own node, with the same flags. The model is
an MLP of --layers square Linear layers of --width (24 x 1024: 25.2M
parameters, 100 MB of float32 gradients), in ringmesh.torch's
DistributedDataParallel with one torch thread, trained on synthetic data
with a DistributedSampler (a global batch of --batch). With --overlap each
gradient bucket goes to the mesh as backward produces it; with
--no-overlap the whole buffer is all-reduced after backward. Prints one
line per host (JSON with --json):

    ddp_overlap overlap=1 params=25190400 batch=256 steps=12 step_s=... compute_s=... step_call_s=...

step_s is the median time between consecutive applied steps (after
--warmup), compute_s the median forward+backward time, step_call_s the
median time spent in step() (the wait for the mesh, and the update).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import torch  # noqa: E402

import ringmesh  # noqa: E402
import ringmesh.torch as rt  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--overlap", dest="overlap", action="store_true")
    mode.add_argument("--no-overlap", dest="overlap", action="store_false")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--part-mb", type=float, default=8.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = []
    for _ in range(a.layers):
        layers += [torch.nn.Linear(a.width, a.width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    params = sum(p.numel() for p in model.parameters())
    data = torch.randn(4 * a.batch, a.width)
    ds = torch.utils.data.TensorDataset(data, torch.randn(4 * a.batch, a.width))
    ddp = rt.DistributedDataParallel(model)
    opt = rt.DistributedOptimizer(torch.optim.SGD(ddp.parameters(), lr=1e-4), ddp, ringmesh.Client(a.data_dir),
                                  overlap=a.overlap, part_mb=a.part_mb)
    sampler = rt.DistributedSampler(ds, opt, batch_size=a.batch, shuffle=False)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler)
    total = a.warmup + a.steps
    steps, computes, calls = [], [], []
    last = None
    while opt.next_step < total:
        for xb, yb in loader:
            t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.mse_loss(ddp(xb), yb).backward()
            t1 = time.perf_counter()
            ok = opt.step()
            t2 = time.perf_counter()
            if ok and opt.next_step > a.warmup:
                if last is not None:
                    steps.append(t2 - last)
                computes.append(t1 - t0)
                calls.append(t2 - t1)
            last = t2 if ok else None
            if opt.next_step >= total:
                break
    res = {"overlap": int(a.overlap), "params": params, "batch": a.batch, "steps": a.steps,
           "step_s": statistics.median(steps), "compute_s": statistics.median(computes),
           "step_call_s": statistics.median(calls), "parts": opt.overlapped[1], "early": opt.overlapped[0]}
    opt.close()
    if a.json:
        print(json.dumps(res))
    else:
        print("ddp_overlap " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
