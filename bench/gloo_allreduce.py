#!/usr/bin/python3
# The torch.distributed gloo baseline that ringmesh's benchmarks compare against.
"""Peer anchor: torch.distributed (gloo) all-reduce, float32 sum.

usage:
  gloo_allreduce.py NPROCS SIZE_MIB [ITERS]
      NPROCS local ranks on loopback (make bench).
  gloo_allreduce.py --rank R --world N --master IP:PORT SIZE_MIB [ITERS]
      one rank of N, each in its own process (the namespace lab runs one per
      lab host; set GLOO_SOCKET_IFNAME to the host's interface).

Each rank fills its tensor, meets the others at a barrier, then times one
all_reduce, ITERS times (10 by default) after a warm-up; the result is
checked. Rank 0 prints one line:
  gloo n=N size=S MiB median_s=... algbw_GBps=... busbw_GBps=...
busbw = algbw * 2(n-1)/n (nccl-tests definition).
"""
import argparse, os, statistics, time
import torch, torch.distributed as dist
import torch.multiprocessing as mp


def measure(rank, world, nbytes, iters, init_method):
    """Runs one rank; returns the median all_reduce time in seconds."""
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
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
    dist.destroy_process_group()
    return statistics.median(times)


def report(world, mib, nbytes, med):
    algbw = nbytes / med / 1e9
    print(f"gloo n={world} size={mib} MiB median_s={med:.4f} algbw_GBps={algbw:.3f} "
          f"busbw_GBps={algbw*2*(world-1)/world:.3f}", flush=True)


def local_worker(rank, world, nbytes, iters, port, q):
    med = measure(rank, world, nbytes, iters, f"tcp://127.0.0.1:{port}")
    if rank == 0:
        q.put(med)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, help="run only this rank (with --world and --master)")
    p.add_argument("--world", type=int)
    p.add_argument("--master", help="IP:PORT where the ranks meet")
    p.add_argument("sizes", nargs="+", help="[NPROCS] SIZE_MIB [ITERS]")
    a = p.parse_args()
    one = a.rank is not None
    if one and (a.world is None or a.master is None):
        p.error("--rank needs --world and --master")
    want = 1 if one else 2
    if not want <= len(a.sizes) <= want + 1:
        p.error("want " + ("SIZE_MIB [ITERS]" if one else "NPROCS SIZE_MIB [ITERS]"))
    args = a.sizes if one else a.sizes[1:]
    mib = float(args[0])
    iters = int(args[1]) if len(args) > 1 else 10
    nbytes = int(mib * (1 << 20)) // 4 * 4
    if one:
        med = measure(a.rank, a.world, nbytes, iters, f"tcp://{a.master}")
        if a.rank == 0:
            report(a.world, mib, nbytes, med)
        return
    n = int(a.sizes[0])
    port = 29500 + os.getpid() % 1000
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=local_worker, args=(r, n, nbytes, iters, port, q)) for r in range(n)]
    for proc in ps:
        proc.start()
    med = q.get()
    for proc in ps:
        proc.join()
    report(n, mib, nbytes, med)


if __name__ == "__main__":
    main()
