"""The local protocol: frame codec golden bytes, and round trips with a real
node (hello, register, status, bad requests)."""

import os
import socket
import struct
import tempfile
import unittest

import numpy as np

import ringmesh
from ringmesh import protocol as P

from . import nodes


class FrameCodecTest(unittest.TestCase):
    def test_encode_golden(self):
        # The bytes Go's localapi.WriteFrame writes for
        # Request{ID: 1, Op: "hello", Version: 1, Client: "t"}.
        got = P.encode_frame({"id": 1, "op": "hello", "version": 1, "client": "t"})
        want = b'\x00\x00\x00\x2e{"id":1,"op":"hello","version":1,"client":"t"}'
        self.assertEqual(got, want)

    def test_encode_utf8(self):
        got = P.encode_frame({"path": "/tmp/\u00e9"})
        self.assertEqual(got, b'\x00\x00\x00\x12{"path":"/tmp/\xc3\xa9"}')

    def test_round_trip(self):
        msg = {"id": 7, "op": "allreduce", "step": 3, "weight": 2.5, "members": ["a", "b"]}
        self.assertEqual(P.decode_frame(P.encode_frame(msg)), msg)

    def test_decode_rejects(self):
        cases = {
            "zero length": struct.pack(">I", 0),
            "too large": struct.pack(">I", P.MAX_FRAME + 1) + b"{}",
            "short header": b"\x00\x00",
            "length mismatch": struct.pack(">I", 5) + b"{}",
            "not json": struct.pack(">I", 3) + b"{x}",
            "not utf-8": struct.pack(">I", 2) + b"\xff\xfe",
            "not an object": struct.pack(">I", 2) + b"[]",
        }
        for name, frame in cases.items():
            with self.subTest(name):
                with self.assertRaises(ringmesh.ProtocolError):
                    P.decode_frame(frame)

    def test_encode_rejects_oversize_and_nan(self):
        with self.assertRaises(ringmesh.ProtocolError):
            P.encode_frame({"path": "x" * P.MAX_FRAME})
        with self.assertRaises(ValueError):
            P.encode_frame({"weight": float("nan")})


class NodeProtocolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        cls.node = nodes.Node(os.path.join(cls.tmp.name, "n0"), "--min-members", "1")

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.tmp.cleanup()

    def client(self):
        c = ringmesh.Client(self.node.data_dir, timeout=30)
        self.addCleanup(c.close)
        return c

    def raw(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(os.path.join(self.node.data_dir, P.SOCKET_NAME))
        self.addCleanup(s.close)
        return s

    @staticmethod
    def read_frame(s):
        hdr = b""
        while len(hdr) < 4:
            b = s.recv(4 - len(hdr))
            if not b:
                return None
            hdr += b
        n = P.decode_length(hdr)
        body = b""
        while len(body) < n:
            b = s.recv(n - len(body))
            if not b:
                raise EOFError
            body += b
        return P.decode_body(body)

    def test_hello(self):
        c = self.client()
        self.assertEqual(c.hello.version, P.VERSION)
        self.assertEqual(c.self_id, self.node.id)
        self.assertEqual(c.hello.mesh, "default")
        self.assertEqual(c.hello.state, "idle")

    def test_status_and_membership(self):
        c = self.client()
        st = c.status()
        self.assertEqual(st["self"]["id"], self.node.id)
        self.assertEqual(st["self"]["addrs"][0], self.node.addr)
        m = c.membership()
        self.assertEqual(m.self, self.node.id)
        self.assertIn(m.state, ("idle", "training"))

    def test_unsupported_version(self):
        s = self.raw()
        s.sendall(P.encode_frame({"id": 1, "op": "hello", "version": 99}))
        resp = self.read_frame(s)
        self.assertEqual(resp["id"], 1)
        self.assertFalse(resp.get("ok", False))
        self.assertEqual(resp["code"], P.CODE_UNSUPPORTED_VERSION)
        self.assertIn("99", resp["error"])

    def test_unknown_op(self):
        c = self.client()
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.call("frobnicate")
        e = cm.exception
        self.assertEqual(e.code, P.CODE_BAD_REQUEST)
        self.assertEqual(e.op, "frobnicate")
        self.assertIn("frobnicate", str(e))
        # The connection survives an error answer.
        self.assertEqual(c.membership().self, self.node.id)

    def test_allreduce_unknown_buffer(self):
        c = self.client()
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.call("allreduce", step=0, buffer=99, count=4)
        self.assertEqual(cm.exception.code, P.CODE_BAD_REQUEST)
        self.assertIn("no buffer 99", cm.exception.message)

    def test_register_by_path_refused(self):
        # A file registered by path could be shrunk under the node (SIGBUS).
        c = self.client()
        path = os.path.join(self.tmp.name, "plain.buf")
        with open(path, "wb") as f:
            f.truncate(64)
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.call("register", path=path, bytes=64)
        self.assertEqual(cm.exception.code, P.CODE_BAD_REQUEST)
        self.assertIn("register_fd", cm.exception.message)

    def test_buffer_cannot_shrink(self):
        # The memfd is sealed: neither the trainer nor anything else can
        # shrink it under the node, which keeps serving.
        c = self.client()
        b = c.shared_buffer(16)
        with self.assertRaises(PermissionError):
            os.ftruncate(b.shm.fd, 0)
        self.assertEqual(c.membership().self, self.node.id)

    def test_unsealed_memfd_refused(self):
        c = self.client()
        fd = os.memfd_create("unsealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, 64)
            with self.assertRaises(ringmesh.RingmeshError) as cm:
                c._call({"op": P.OP_REGISTER_FD, "bytes": 64}, fd=fd)
        finally:
            os.close(fd)
        self.assertEqual(cm.exception.code, P.CODE_BAD_REQUEST)
        self.assertIn("not sealed", cm.exception.message)

    def test_allreduce_out_of_range(self):
        c = self.client()
        b = c.shared_buffer(8)
        with self.assertRaises(ValueError):
            b.allreduce(0, count=9)
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.call("allreduce", step=0, buffer=b.id, offset=16, count=8)
        self.assertEqual(cm.exception.code, P.CODE_BAD_REQUEST)

    def test_oversize_frame_answered_then_closed(self):
        s = self.raw()
        s.sendall(struct.pack(">I", P.MAX_FRAME + 1))
        resp = self.read_frame(s)
        self.assertEqual(resp["code"], P.CODE_BAD_REQUEST)
        self.assertIsNone(self.read_frame(s))  # the node closed the connection

    def test_register_and_unregister(self):
        c = self.client()
        before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
        b = c.shared_buffer(16)
        self.assertGreater(b.id, 0)
        fd = b.shm.fd
        os.fstat(fd)  # open
        if os.path.isdir("/dev/shm"):
            self.assertEqual(set(os.listdir("/dev/shm")), before, "a buffer left a file in /dev/shm")
        b.close()
        with self.assertRaises(OSError):
            os.fstat(fd)
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.call("unregister", buffer=99)
        self.assertEqual(cm.exception.code, P.CODE_NOT_FOUND)

    def test_shared_array_is_shared_memory(self):
        c = self.client()
        a = c.shared_array(6, shape=(2, 3))
        a[:] = np.arange(6).reshape(2, 3)
        fd = c._buffers[-1].shm.fd
        self.assertEqual(np.frombuffer(os.pread(fd, 24, 0), dtype=np.float32).tolist(), [0, 1, 2, 3, 4, 5])

    def test_checkpoint_save_list_fetch(self):
        c = self.client()
        src = os.path.join(self.tmp.name, "ck-src.bin")
        data = os.urandom(300_000)
        with open(src, "wb") as f:
            f.write(data)
        r = c.checkpoint_save(src, 12)
        info = r.checkpoint
        self.assertEqual(info["step"], 12)
        self.assertEqual(info["size"], len(data))
        self.assertTrue(info["local"])
        listed = {k["root"]: k for k in c.checkpoint_list()}
        self.assertIn(info["root"], listed)
        self.assertEqual(listed[info["root"]]["step"], 12)
        cks, fetches = c.checkpoint_list(fetches=True)
        self.assertEqual(fetches, [])

        dest = os.path.join(self.tmp.name, "ck-latest.bin")
        r = c.checkpoint_fetch(dest, latest=True)
        self.assertEqual(r.checkpoint["path"], dest)
        self.assertGreaterEqual(r.checkpoint["step"], 12)
        dest2 = os.path.join(self.tmp.name, "ck-root.bin")
        r = c.checkpoint_fetch(dest2, root=info["root"])
        self.assertEqual(r.checkpoint["root"], info["root"])
        self.assertTrue(r.fetch["local"])
        with open(dest2, "rb") as f:
            self.assertEqual(f.read(), data)

        with self.assertRaises(ValueError):
            c.checkpoint_fetch(dest, root=info["root"], latest=True)
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.checkpoint_fetch(dest, root="not-a-root")
        self.assertEqual(cm.exception.code, P.CODE_BAD_REQUEST)
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.call("checkpoint_save", path="relative.bin", step=1)
        self.assertEqual(cm.exception.code, P.CODE_BAD_REQUEST)
        with self.assertRaises(ringmesh.RingmeshError) as cm:
            c.checkpoint_save(os.path.join(self.tmp.name, "missing.bin"), 1)
        self.assertNotEqual(cm.exception.code, "")

    def test_torch_save_load_through_node(self):
        import torch
        import ringmesh.torch as rt

        c = self.client()
        torch.manual_seed(3)
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        ckdir = os.path.join(self.tmp.name, "torch-ck")
        r = rt.save(model, opt, 1000, c, directory=ckdir, extra={"epoch": 3})
        self.assertEqual(r.checkpoint["step"], 1000)
        for step in (1001, 1002):
            rt.save(model, opt, step, c, directory=ckdir)
        self.assertEqual(sorted(os.listdir(ckdir)), ["step-000000001001.pt", "step-000000001002.pt"])

        dest = os.path.join(self.tmp.name, "torch-fetched.pt")
        fetched = c.checkpoint_fetch(dest, root=r.checkpoint["root"])
        model2 = torch.nn.Linear(4, 3)
        opt2 = torch.optim.Adam(model2.parameters(), lr=0.01)
        state = rt.load(fetched.checkpoint["path"], model2, opt2)
        self.assertEqual(state["step"], 1000)
        self.assertEqual(state["extra"], {"epoch": 3})
        for a, b in zip(model.parameters(), model2.parameters()):
            self.assertTrue(torch.equal(a, b))
        self.assertEqual(str(opt.state_dict()), str(opt2.state_dict()))
