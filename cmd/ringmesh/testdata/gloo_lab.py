#!/usr/bin/python3
"""One rank of the gloo all-reduce baseline on the namespace lab.

usage: gloo_lab.py RANK WORLD MASTER_IP PORT SIZE_MIB ITERS
The same measurement as bench/gloo_allreduce.py at the repository root
(fill, barrier, timed all_reduce, median), but one process per lab host:
every rank runs in its own network namespace and they meet at
tcp://MASTER_IP:PORT. Rank 0 prints: gloo n=N size=S MiB median_s=... algbw_GBps=... busbw_GBps=...
"""
import statistics, sys, time
import torch, torch.distributed as dist

def main():
    rank, world, master, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    mib, iters = float(sys.argv[5]), int(sys.argv[6])
    nbytes = int(mib * (1 << 20)) // 4 * 4
    dist.init_process_group("gloo", init_method=f"tcp://{master}:{port}", rank=rank, world_size=world)
    t = torch.ones(nbytes // 4, dtype=torch.float32) * (rank + 1)
    dist.all_reduce(t)  # warm-up
    times = []
    for _ in range(iters):
        t.fill_(rank + 1)
        dist.barrier()
        s = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - s)
    expect = world * (world + 1) / 2
    assert abs(t[0].item() - expect) < 1e-3 and abs(t[-1].item() - expect) < 1e-3
    if rank == 0:
        med = statistics.median(times)
        algbw = nbytes / med / 1e9
        print(f"gloo n={world} size={mib} MiB median_s={med:.4f} algbw_GBps={algbw:.3f} busbw_GBps={algbw*2*(world-1)/world:.3f}", flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    main()
