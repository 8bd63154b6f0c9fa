#!/usr/bin/env bash
# test-deps: make sure what `make test` needs is here. As root with
# apt-get, install what is missing; otherwise stop with the one command to
# run. RINGMESH_NO_INSTALL=1 only checks.
#
#   iproute2, nftables: the namespace lab (ip netns, veth, bridge, tc, cuts)
#   python3-numpy, python3-torch: the Python client tests
#   python3-venv: the pip install test
#   the shellcheck linter: the Slurm script and the DDP example script
set -euo pipefail
py=${PYTHON:-/usr/bin/python3}
missing=()
need() { # need PACKAGE CHECK...: PACKAGE is missing when CHECK fails
  local pkg=$1; shift
  "$@" >/dev/null 2>&1 || missing+=("$pkg")
}
need iproute2 command -v ip
need iproute2 command -v tc
need nftables command -v nft
need python3-numpy "$py" -c 'import numpy'
need python3-torch "$py" -c 'import torch'
need python3-venv "$py" -c 'import ensurepip, venv'
need shellcheck command -v shellcheck
[ ${#missing[@]} = 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
cmd="apt-get update && apt-get install -y ${missing[*]}"
if [ "${RINGMESH_NO_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "make test: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
  exit 0
fi
echo "make test: missing ${missing[*]}; run as root:" >&2
echo "  $cmd" >&2
echo "(or RINGMESH_SKIP_DEPS=1 make test to run what can run without them)" >&2
exit 1
