"""`pip install ./python` works offline (the in-tree build backend needs
nothing downloaded) into a venv that sees Debian's numpy and torch, and the
installed entry point and `python -m ringmesh.torch.example` train through
a throwaway node. The fallback TOML reader of the backend reads
pyproject.toml as tomllib does."""

import os
import subprocess
import sys
import tempfile
import unittest
import zipfile

from . import nodes

PYDIR = os.path.join(nodes.REPO, "python")


class PackagingTest(unittest.TestCase):
    def test_pip_install_offline(self):
        tmp = tempfile.TemporaryDirectory(prefix="ringmesh-pytest-")
        self.addCleanup(tmp.cleanup)
        venv = os.path.join(tmp.name, "venv")
        r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, f"python3 -m venv failed (apt-get install python3-venv): {r.stderr}")
        py = os.path.join(venv, "bin", "python")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(RINGMESH_BIN=nodes.binary(), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        r = subprocess.run([py, "-m", "pip", "install", PYDIR], capture_output=True, text=True, timeout=300, env=env,
                           cwd=tmp.name)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        r = subprocess.run([py, "-c", "import ringmesh.torch, ringmesh; print(ringmesh.__file__)"], capture_output=True,
                           text=True, timeout=120, env=env, cwd=tmp.name)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip().startswith(venv), r.stdout)
        for cmd in ([os.path.join(venv, "bin", "ringmesh-torch-example"), "--steps", "12"],
                    [py, "-m", "ringmesh.torch.example", "--steps", "12"]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp.name)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertRegex(r.stdout, r"ringmesh example: 12 steps, loss [\d.]+ -> [\d.]+, parameter hash [0-9a-f]{16}: ok")

    def test_wheel_contents(self):
        sys.path.insert(0, os.path.join(PYDIR, "_build"))
        try:
            import backend
        finally:
            sys.path.pop(0)
        with tempfile.TemporaryDirectory() as d:
            whl = backend.build_wheel(d)
            with zipfile.ZipFile(os.path.join(d, whl)) as z:
                names = set(z.namelist())
                meta = z.read("ringmesh-0.1.0.dist-info/METADATA").decode()
                record = z.read("ringmesh-0.1.0.dist-info/RECORD").decode()
        for want in ("ringmesh/__init__.py", "ringmesh/client.py", "ringmesh/torch/__init__.py",
                     "ringmesh/torch/_local.py", "ringmesh/torch/example.py",
                     "ringmesh-0.1.0.dist-info/entry_points.txt"):
            self.assertIn(want, names)
        self.assertFalse([n for n in names if "__pycache__" in n or n.startswith("tests/")], names)
        self.assertIn("Requires-Dist: numpy", meta)
        self.assertIn('Requires-Dist: torch; extra == "torch"', meta)
        self.assertEqual(len(record.strip().splitlines()), len(names))
        try:
            import tomllib
        except ImportError:
            self.skipTest("no tomllib (Python < 3.11) to compare the fallback reader with")
        with open(os.path.join(PYDIR, "pyproject.toml"), "rb") as f:
            self.assertEqual(backend._parse_simple(os.path.join(PYDIR, "pyproject.toml")), tomllib.load(f))


if __name__ == "__main__":
    unittest.main()
