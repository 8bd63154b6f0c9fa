#!/usr/bin/env python3
"""The same training as torch DDP (train_ddp.py) and over ringmesh
(train_ringmesh.py): see README.md. Run it with torchrun."""

import argparse
import hashlib
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
import ringmesh.torch as rt


class Net(torch.nn.Module):
    """An MLP; ``mean_in`` is a running mean of the inputs (a buffer, like
    BatchNorm's), with ``--batchnorm`` a BatchNorm layer too."""

    def __init__(self, batchnorm: bool):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(32, 64), torch.nn.Linear(64, 10)
        self.bn = torch.nn.BatchNorm1d(64) if batchnorm else torch.nn.Identity()
        self.register_buffer("mean_in", torch.zeros(32))

    def forward(self, x):
        if self.training:
            self.mean_in.mul_(0.9).add_(0.1 * x.mean(0))
        return self.fc2(F.relu(self.bn(self.fc1(x))))


def dataset(seed: int, n: int = 4096) -> TensorDataset:
    """Synthetic: labels from a fixed random linear teacher."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    return TensorDataset(x, (x @ torch.randn(32, 10, generator=g)).argmax(1))


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batchnorm", action="store_true")
    p.add_argument("--step-delay", type=float, default=0, help="seconds of extra work per step")
    p.add_argument("--out", help="rank 0 saves the final state dict here")
    args = p.parse_args()
    dist.init_process_group("gloo")
    torch.manual_seed(args.seed)
    data = dataset(args.seed)
    model = DDP(Net(args.batchnorm))
    opt = rt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9), model)
    sampler = rt.DistributedSampler(data, opt, batch_size=args.batch, seed=args.seed)
    loader = DataLoader(data, batch_sampler=sampler)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            time.sleep(args.step_delay)
    m = model.module
    print(f"rank {os.environ.get('RANK', '0')}: params {digest(m.parameters())} buffers {digest(m.buffers())}",
          flush=True)
    if args.out and dist.get_rank() == 0:
        torch.save(m.state_dict(), args.out)


if __name__ == "__main__":
    main()
