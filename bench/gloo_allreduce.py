#!/usr/bin/python3
# The torch.distributed gloo baseline that ringmesh's benchmarks compare against.
"""Peer anchor: torch.distributed (gloo) all-reduce on loopback.

usage: gloo_allreduce.py NPROCS SIZE_MIB [ITERS]
Prints one line: gloo n=N size=S MiB median_s=... algbw_GBps=... busbw_GBps=...
busbw = algbw * 2(n-1)/n (nccl-tests definition).
"""
import os, sys, time, statistics
import torch, torch.distributed as dist
import torch.multiprocessing as mp

def worker(rank, n, nbytes, iters, port, q):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=n)
    t = torch.ones(nbytes // 4, dtype=torch.float32) * (rank + 1)
    dist.all_reduce(t)  # warm-up
    times = []
    for _ in range(iters):
        t.fill_(rank + 1)
        dist.barrier()
        s = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - s)
    expect = n * (n + 1) / 2
    assert abs(t[0].item() - expect) < 1e-3 and abs(t[-1].item() - expect) < 1e-3
    if rank == 0:
        q.put(statistics.median(times))
    dist.destroy_process_group()

if __name__ == "__main__":
    n = int(sys.argv[1]); mib = float(sys.argv[2]); iters = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    nbytes = int(mib * (1 << 20)) // 4 * 4
    port = 29500 + os.getpid() % 1000
    ctx = mp.get_context("spawn"); q = ctx.Queue()
    ps = [ctx.Process(target=worker, args=(r, n, nbytes, iters, port, q)) for r in range(n)]
    [p.start() for p in ps]; med = q.get(); [p.join() for p in ps]
    algbw = nbytes / med / 1e9
    print(f"gloo n={n} size={mib} MiB median_s={med:.4f} algbw_GBps={algbw:.3f} busbw_GBps={algbw*2*(n-1)/n:.3f}")
