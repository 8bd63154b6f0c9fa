"""Real `ringmesh node` processes for the Python tests (loopback only).

The binary is $RINGMESH_BIN (set by `make test`) or bin/ringmesh (build it
with `make build`). Every node listens on 127.0.0.1 with mDNS and the DHT
off; the first node's address comes from `ringmesh status --json`, the
others --join it. Nodes are stopped by PID (SIGTERM, then SIGKILL).

Nodes whose data dirs are siblings share one mesh secret (the parent
directory's mesh.psk, passed with --psk), as hosts given one join token do,
unless their arguments bring credentials of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Dict, List, Optional

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOCAL_ARGS = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--fast-detect"]


def binary() -> str:
    path = os.environ.get("RINGMESH_BIN") or os.path.join(REPO, "bin", "ringmesh")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"ringmesh binary {path} missing: run `make build` or set RINGMESH_BIN")
    return path


def shared_secret(root: str) -> str:
    """The mesh secret file shared by the data dirs under ``root``
    (created once, mode 0600, in the /key/swarm/psk/1.0.0/ format)."""
    path = os.path.join(root, "mesh.psk")
    if not os.path.exists(path):
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("/key/swarm/psk/1.0.0/\n/base16/\n" + os.urandom(32).hex() + "\n")
        os.replace(path + ".tmp", path)
    return path


def _has_credentials(args: List[str]) -> bool:
    return any(a == "--psk" or a.startswith("--psk=") or a == "--insecure-open-mesh" or a.startswith("rm1.")
               for a in args)


def status(data_dir: str) -> Optional[dict]:
    """`ringmesh status --data-dir D --json`, or None while it fails."""
    try:
        out = subprocess.run([binary(), "status", "--data-dir", data_dir, "--json"], capture_output=True,
                             timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)


class Node:
    """One `ringmesh node` process with its own data dir."""

    def __init__(self, data_dir: str, *args: str):
        self.data_dir = data_dir
        self.args = list(args)
        os.makedirs(data_dir, exist_ok=True)
        if not _has_credentials(self.args):
            self.args += ["--psk", shared_secret(os.path.dirname(os.path.abspath(data_dir)))]
        self.log_path = os.path.join(data_dir, f"node-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary(), "node", "--data-dir", data_dir, *LOCAL_ARGS, *self.args],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.id = ""
        self.addr = ""
        deadline = time.monotonic() + 30
        while True:
            st = status(data_dir)
            if st and st["self"]["addrs"]:
                self.id, self.addr = st["self"]["id"], st["self"]["addrs"][0]
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {data_dir} exited at start ({self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"node {data_dir}: control socket did not answer in 30s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 4000) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")

    def kill(self) -> None:
        """Crash the node (SIGKILL) and wait for it to be gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def cluster(root: str, n: int, *args: str) -> List[Node]:
    """n nodes in root/0..n-1 forming a mesh of n (--min-members n); every
    node after the first joins the first."""
    nodes: List[Node] = []
    try:
        nodes.append(Node(os.path.join(root, "0"), "--min-members", str(n), *args))
        for i in range(1, n):
            nodes.append(Node(os.path.join(root, str(i)), "--min-members", str(n), "--join", nodes[0].addr, *args))
    except BaseException:
        for nd in nodes:
            nd.stop()
        raise
    return nodes


def cluster_for(test, root: str, n: int, *args: str) -> List[Node]:
    """cluster(root, n, *args) whose nodes stop when the unittest ``test``
    ends (addCleanup)."""
    ns = cluster(root, n, *args)
    for nd in ns:
        test.addCleanup(nd.stop)
    return ns


def run_threads(fns: List[Callable[[], object]], timeout: float = 120) -> List[object]:
    """Run each fn in its own thread; return their results in order, raise
    the first exception, or fail when one is still running after timeout."""
    results: Dict[int, object] = {}
    errors: Dict[int, BaseException] = {}

    def wrap(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # reported to the test thread below
            errors[i] = e

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0))
    alive = [i for i, t in enumerate(threads) if t.is_alive()]
    if alive:
        raise AssertionError(f"trainer threads {alive} still running after {timeout}s; errors so far: {errors}")
    for i in sorted(errors):
        raise errors[i]
    return [results[i] for i in range(len(fns))]
