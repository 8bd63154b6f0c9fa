#!/usr/bin/env bash
# Two "hosts" on this machine: two ringmesh nodes, and `torchrun
# --nproc_per_node 2` of train_ringmesh.py against each (CPU, gloo among
# each host's local ranks, no rendezvous host). Once the mesh is training,
# host b's node is SIGKILLed and started again: b's trainers wait for it,
# rejoin and load the mesh's checkpoint, and training goes on. At the end
# every rank prints the hash of its parameters and buffers: all equal.
#
#   make build && examples/pytorch/ddp/run_local.sh [train_ringmesh.py flags]
#
# RINGMESH_BIN: the binary (default bin/ringmesh of this checkout);
# RUN_DIR: where the nodes' data dirs and logs go (default a temp dir,
# removed at the end unless KEEP=1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin=${RINGMESH_BIN:-$repo/bin/ringmesh}
py=${PYTHON:-python3}
"$py" -c 'import torch' 2>/dev/null || py=/usr/bin/python3
[ -x "$bin" ] || { echo "run_local.sh: $bin missing: run 'make build' (or set RINGMESH_BIN)" >&2; exit 1; }
command -v torchrun >/dev/null || { echo "run_local.sh: torchrun missing (apt-get install python3-torch)" >&2; exit 1; }
"$py" -c 'import ringmesh' 2>/dev/null || export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
run=${RUN_DIR:-$(mktemp -d /tmp/ringmesh-ddp.XXXXXX)}
mkdir -p "$run"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || [ -n "${RUN_DIR:-}" ] || rm -rf "$run"
}
trap cleanup EXIT

node() { # node NAME ARGS...: start a node, its PID in $node_pid
  local name=$1; shift
  "$bin" node --data-dir "$run/$name" --listen /ip4/127.0.0.1/tcp/0 --no-mdns --no-dht --fast-detect \
    --min-members 2 "$@" >>"$run/$name.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 300); do
    "$bin" status --data-dir "$run/$name" >/dev/null 2>&1 && return 0
    kill -0 "$node_pid" 2>/dev/null || { echo "node $name exited:" >&2; tail -20 "$run/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "node $name did not start" >&2; exit 1
}
next_step() {
  "$bin" status --data-dir "$run/$1" --json 2>/dev/null | "$py" -c 'import json,sys; print(json.load(sys.stdin)["rounds"]["next_step"])' 2>/dev/null || echo 0
}

node a
token=$("$bin" token --data-dir "$run/a")
node b --join "$token"
pid_b=$node_pid

# torch 1.13 on Python 3.11 (Debian 12) cannot parse torchrun's default
# --redirects/--tee 0 (IntFlag iteration skips 0): ask for stdout teed.
fix=()
"$py" -c 'import sys; from torch.distributed.elastic.multiprocessing.api import Std; sys.exit(Std.from_str("0") is None)' ||
  fix=(--redirects 1 --tee 1)
# On real hosts `torchrun --standalone` is enough; two on one machine need
# a port each for their local rendezvous.
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
trainers() { # trainers NAME: torchrun against node NAME
  RINGMESH_DATA_DIR="$run/$1" RINGMESH_RECONNECT_TIMEOUT=120 OMP_NUM_THREADS=1 \
    torchrun --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "$(free_port)" "${fix[@]}" \
    "$here/train_ringmesh.py" --step-delay 0.02 "${@:2}" \
    >"$run/train-$1.out" 2>"$run/train-$1.log" &
  pids+=("$!")
}
trainers a "$@"; ta=$!
trainers b "$@"; tb=$!

for _ in $(seq 600); do [ "$(next_step a)" -ge 40 ] && break; sleep 0.1; done
echo "run_local.sh: step $(next_step a): SIGKILL node b (pid $pid_b)"
kill -KILL "$pid_b"
wait "$pid_b" 2>/dev/null || true
sleep 1
node b --join "$token"
echo "run_local.sh: node b restarted (pid $node_pid)"

ok=0
wait "$ta" || ok=$?
wait "$tb" || ok=$?
cat "$run"/train-a.out "$run"/train-b.out
if [ "$ok" != 0 ]; then
  KEEP=1
  echo "run_local.sh: a trainer failed ($ok); logs in $run" >&2
  tail -n 30 "$run"/train-*.log >&2 || true
  exit 1
fi
hashes=$(sed -n 's/^.*rank [0-9]*: //p' "$run"/train-a.out "$run"/train-b.out | sort -u)
if [ "$(printf '%s\n' "$hashes" | wc -l)" != 1 ] || [ "$(cat "$run"/train-*.out | grep -c 'rank [0-9]*: params')" != 4 ]; then
  echo "run_local.sh: the ranks differ" >&2
  exit 1
fi
echo "run_local.sh: all 4 ranks equal: $hashes"
