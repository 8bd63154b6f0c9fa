// Package bench is `ringmesh bench`: the all-reduce benchmark (local node
// processes or a live mesh; algbw, busbw and the nodes' CPU time, as
// nccl-tests and gloo report them), the recovery benchmark (SIGKILL a
// member mid-round, time until the survivors apply the next step) and the
// checkpoint swarm-fetch benchmark. It starts nodes with internal/nodeproc;
// cmd/ringmesh only turns flags into the configs. gloo_allreduce.py, next
// to it, is the torch.distributed baseline `make bench` runs on the same
// machine.
package bench
