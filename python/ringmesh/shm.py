"""Shared-memory files that the node maps too (node/localapi/shm.go).

A buffer is a regular file in /dev/shm (or the temp dir where /dev/shm is
missing), sized with ftruncate and mapped MAP_SHARED by both the trainer and
the node, so gradients are reduced in place without crossing the socket. The
node reads and writes native-endian float32s at the byte offsets a request
names.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Optional

import numpy as np


def shm_dir() -> str:
    """The directory shared buffers are created in."""
    if os.path.isdir("/dev/shm"):
        return "/dev/shm"
    return tempfile.gettempdir()


class SharedMemory:
    """A file of ``nbytes`` bytes mapped read-write into this process."""

    def __init__(self, nbytes: int, directory: Optional[str] = None):
        if nbytes <= 0 or nbytes % 4:
            raise ValueError(f"shared buffer size {nbytes} is not a positive multiple of 4")
        fd, path = tempfile.mkstemp(prefix="ringmesh-", suffix=".buf", dir=directory or shm_dir())
        try:
            os.ftruncate(fd, nbytes)
            self._mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self.path = path
        self.nbytes = nbytes
        self._bytes = np.frombuffer(self._mm, dtype=np.uint8)
        self.address = self._bytes.ctypes.data  # where the mapping starts

    def float32(self, count: Optional[int] = None, offset: int = 0) -> np.ndarray:
        """A float32 view of ``count`` elements (default: all that fit) from
        byte ``offset``."""
        if offset % 4:
            raise ValueError(f"offset {offset} is not a multiple of 4")
        if count is None:
            count = (self.nbytes - offset) // 4
        if offset < 0 or count < 0 or offset + 4 * count > self.nbytes:
            raise ValueError(f"range [{offset}, {offset + 4 * count}) outside a buffer of {self.nbytes} bytes")
        return self._bytes[offset:offset + 4 * count].view(np.float32)

    def contains(self, address: int, nbytes: int) -> bool:
        """Whether bytes [address, address+nbytes) lie inside the mapping."""
        return self.address <= address and address + nbytes <= self.address + self.nbytes

    def close(self) -> None:
        """Remove the file and unmap the memory. Views still alive keep the
        mapping until they are garbage collected."""
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = ""
        self._bytes = None
        try:
            self._mm.close()
        except BufferError:
            pass  # exported views remain; the mapping goes with the last one

    def __del__(self):
        try:
            if self.path:
                os.unlink(self.path)
        except Exception:
            pass
