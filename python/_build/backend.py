"""The package's PEP 517 build backend, in the tree so that
``pip install ./python`` works offline: pip builds in an isolated
environment and would otherwise download setuptools first. The package is
pure Python, so a wheel is a zip of ``ringmesh/`` plus the metadata read
from pyproject.toml (``[project]``: name, version, description, readme,
requires-python, license, dependencies, optional-dependencies, scripts).
Editable installs (``pip install -e``) get a wheel with a ``.pth`` file
pointing at the source tree."""

import base64
import hashlib
import io
import os
import json
import re
import tarfile
import zipfile

try:
    import tomllib
except ImportError:  # Python < 3.11: the subset of TOML our pyproject.toml uses
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ringmesh"


def _project():
    path = os.path.join(ROOT, "pyproject.toml")
    if tomllib is not None:
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]
    return _parse_simple(path)["project"]


def _parse_simple(path):
    """Tables, and keys whose values are strings, arrays of strings or
    inline tables of strings, one per line."""
    doc, table = {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r"\[([\w.-]+)\]", line)
            if m:
                table = doc
                for part in m.group(1).split("."):
                    table = table.setdefault(part, {})
                continue
            key, _, value = (x.strip() for x in line.partition("="))
            value = re.sub(r"([{,])\s*([\w-]+)\s*=", r'\1"\2":', value)
            table[key.strip('"')] = json.loads(value)
    return doc


def _metadata(p):
    lines = ["Metadata-Version: 2.1", f"Name: {p['name']}", f"Version: {p['version']}"]
    if "description" in p:
        lines.append(f"Summary: {p['description']}")
    if "requires-python" in p:
        lines.append(f"Requires-Python: {p['requires-python']}")
    lic = p.get("license")
    if isinstance(lic, str):  # PEP 639: an SPDX expression
        lines.append(f"License-Expression: {lic}")
    elif isinstance(lic, dict) and "text" in lic:
        lines.append(f"License: {lic['text']}")
    lines += [f"Requires-Dist: {d}" for d in p.get("dependencies", [])]
    for extra, deps in p.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {d}; extra == "{extra}"' for d in deps]
    body = ""
    if "readme" in p:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(ROOT, p["readme"]), encoding="utf-8") as f:
            body = "\n" + f.read()
    return "\n".join(lines) + "\n" + body


def _sources():
    for d, dirs, files in os.walk(os.path.join(ROOT, PACKAGE)):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(d, name)
                yield path, os.path.relpath(path, ROOT).replace(os.sep, "/")


def _wheel(wheel_directory, files):
    """Write a wheel of files ({archive name: bytes}) plus dist-info."""
    p = _project()
    name = p["name"].replace("-", "_")
    info = f"{name}-{p['version']}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = _metadata(p).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: ringmesh-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    scripts = p.get("scripts", {})
    if scripts:
        files[f"{info}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in scripts.items())).encode()
    record = []
    for arc, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    filename = f"{name}-{p['version']}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in files.items():
            z.writestr(zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {}
    for path, arc in _sources():
        with open(path, "rb") as f:
            files[arc] = f.read()
    return _wheel(wheel_directory, files)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {f"_{PACKAGE}_editable.pth": (ROOT + "\n").encode()})


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = f"{p['name']}-{p['version']}"
    filename = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as t:
        names = ["pyproject.toml", p.get("readme", "README.md")] + [arc for _, arc in _sources()]
        for d, dirs, fs in os.walk(os.path.join(ROOT, "_build")):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            names += [os.path.relpath(os.path.join(d, f), ROOT) for f in fs if f.endswith(".py")]
        for arc in names:
            t.add(os.path.join(ROOT, arc), f"{base}/{arc}")
        pkg = _metadata(p).encode()
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(pkg)
        t.addfile(ti, io.BytesIO(pkg))
    return filename
