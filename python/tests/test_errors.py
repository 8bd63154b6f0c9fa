"""Clear errors: no node on the data dir, a node SIGKILLed in the middle of
a call (join, all-reduce), a hung node (socket timeout), reconnecting to a
restarted node."""

import os
import signal
import socket
import tempfile
import threading
import time
import unittest

import numpy as np

import ringmesh

from . import nodes


class NodeAbsentTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name

    def check(self, cm, fragment):
        e = cm.exception
        self.assertIsInstance(e, ConnectionError)
        msg = str(e)
        self.assertNotIn("\n", msg)
        self.assertIn(self.dir, msg)
        self.assertIn(fragment, msg)
        self.assertIn("ringmesh node --data-dir", msg)

    def test_no_socket(self):
        with self.assertRaises(ringmesh.NodeNotRunning) as cm:
            ringmesh.Client(self.dir)
        self.check(cm, "no socket")

    def test_stale_socket(self):
        path = os.path.join(self.dir, "ringmesh.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # the file stays, nobody listens: a node that crashed
        with self.assertRaises(ringmesh.NodeNotRunning) as cm:
            ringmesh.Client(self.dir)
        self.check(cm, "stale socket")

    def test_missing_data_dir(self):
        self.dir = os.path.join(self.dir, "does-not-exist")
        with self.assertRaises(ringmesh.NodeNotRunning) as cm:
            ringmesh.Client(self.dir)
        self.check(cm, "no socket")


def call_in_thread(fn):
    """Start fn in a thread; return a function that waits for it (up to a
    generous deadline, so a hang fails instead of blocking) and returns the
    exception it raised, or None."""
    box = {}

    def run():
        try:
            fn()
        except BaseException as e:  # handed to the test thread
            box["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def wait(timeout=60):
        t.join(timeout)
        if t.is_alive():
            raise AssertionError(f"call still blocked {timeout}s after the node went away")
        return box.get("err")

    return wait


def wait_stopped(pid, timeout=30):
    """Wait until every thread of pid is stopped (SIGSTOP is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                pass
        if states and all(st in ("T", "t") for st in states):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} not stopped within {timeout}s: thread states {states}")
        time.sleep(0.02)


class NodeGoneTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        self.root = tmp.name

    def node(self, name, *args):
        nd = nodes.Node(os.path.join(self.root, name), *args)
        self.addCleanup(nd.stop)
        return nd

    def client(self, nd, **kw):
        c = ringmesh.Client(nd.data_dir, **kw)
        self.addCleanup(c.close)
        return c

    def wait_state(self, c, state):
        deadline = time.monotonic() + 30
        while c.membership().state != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"node not {state} within 30s: {c.membership()}")
            time.sleep(0.05)

    def assert_lost(self, err, op):
        self.assertIsInstance(err, ringmesh.NodeConnectionLost, repr(err))
        self.assertIsInstance(err, ConnectionError)
        self.assertIn(op, str(err))
        self.assertIn("reconnect", str(err))

    def test_killed_during_join_then_restarted(self):
        nd = self.node("a", "--min-members", "2")  # join waits for a second node
        c = self.client(nd, timeout=60)
        arr = c.shared_array(8)
        probe = self.client(nd, timeout=30)
        wait = call_in_thread(lambda: c.join(timeout=120))
        self.wait_state(probe, "forming")
        nd.kill()
        err = wait()
        self.assert_lost(err, "join")
        self.assertIn(nd.data_dir, str(err))
        # Later calls fail at once, saying so.
        with self.assertRaises(ringmesh.NodeConnectionLost) as cm:
            c.membership()
        self.assertIn("not connected", str(cm.exception))

        # The node comes back on the same data dir: reconnect, the shared
        # buffers are registered again, training goes on.
        nd2 = self.node("a", "--min-members", "1")
        self.assertEqual(nd2.id, nd.id)
        c.reconnect()
        step = c.join(timeout=60).step
        arr[:] = np.arange(8)
        r = c.allreduce(arr, step, reduce="sum")
        self.assertEqual(r.members, [nd2.id])
        np.testing.assert_array_equal(arr, np.arange(8, dtype=np.float32))

    def test_killed_during_allreduce(self):
        a = self.node("a", "--min-members", "2")
        b = self.node("b", "--min-members", "2", "--join", a.addr)
        ca, cb = self.client(a, timeout=60), self.client(b, timeout=60)
        steps = nodes.run_threads([lambda: ca.join(timeout=60).step, lambda: cb.join(timeout=60).step])
        self.assertEqual(steps[0], steps[1])
        x = np.ones(1024, dtype=np.float32)
        # b's trainer never submits: a's all-reduce waits for it.
        wait = call_in_thread(lambda: ca.allreduce(x, steps[0]))
        time.sleep(0.5)
        a.kill()
        self.assert_lost(wait(), "allreduce")
        np.testing.assert_array_equal(x, np.ones(1024, dtype=np.float32))

    def test_hung_node_times_out(self):
        nd = self.node("a", "--min-members", "1")
        c = self.client(nd, timeout=1.0)
        nd.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: nd.proc.poll() is None and nd.proc.send_signal(signal.SIGCONT))
        wait_stopped(nd.proc.pid)
        wait = call_in_thread(c.membership)
        err = wait()
        self.assertIsInstance(err, ringmesh.NodeConnectionLost, repr(err))
        self.assertIn("did not answer within 1s", str(err))
        nd.proc.send_signal(signal.SIGCONT)
        c.reconnect()
        self.assertEqual(c.membership().self, nd.id)
