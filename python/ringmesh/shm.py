"""Shared-memory buffers that the node maps too (node/localapi/memfd_linux.go).

A buffer is an anonymous memfd, sized with ftruncate, sealed against
shrinking and growing (so the node's mapping can never lose its pages), and
mapped MAP_SHARED by the trainer; its descriptor is passed to the node over
the control socket, which maps it too, so gradients are reduced in place
without crossing the socket. Nothing is left in /dev/shm however either
process ends. The node reads and writes native-endian float32s at the byte
offsets a request names.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from typing import Optional

import numpy as np


class SharedMemory:
    """A file of ``nbytes`` bytes mapped read-write into this process."""

    def __init__(self, nbytes: int):
        if nbytes <= 0 or nbytes % 4:
            raise ValueError(f"shared buffer size {nbytes} is not a positive multiple of 4")
        fd = os.memfd_create("ringmesh-buffer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, nbytes)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self._mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        # Kept open: a reconnect registers the same memory again.
        self.fd = fd
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
        """Close the descriptor and unmap the memory. Views still alive keep
        the mapping until they are garbage collected."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._bytes = None
        try:
            self._mm.close()
        except BufferError:
            pass  # exported views remain; the mapping goes with the last one

    def __del__(self):
        try:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
        except Exception:
            pass
