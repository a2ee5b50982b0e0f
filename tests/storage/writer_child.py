"""A writer process for the killed-writer test: uploads, announces midway, then stalls.

Run as ``python writer_child.py local ROOT`` or ``python writer_child.py s3 ENDPOINT PREFIX``.
It prints ``midway`` once part of the data has gone to the store, then blocks
until it is killed.
"""

from __future__ import annotations

import io
import os
import sys
import time

from storage.local import LocalObjectStore
from storage.s3 import PART_BYTES, S3ObjectStore

TOTAL = 3 * PART_BYTES


class StallingFile(io.RawIOBase):
    """A seekable file of zeros that stalls its second pass (the upload) midway."""

    def __init__(self) -> None:
        self.pos = 0
        self.passes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset
        self.passes += 1
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if self.passes >= 1 and self.pos >= 2 * PART_BYTES:
            print("midway", flush=True)
            time.sleep(3600)
        n = TOTAL - self.pos if n < 0 else min(n, TOTAL - self.pos)
        self.pos += n
        return b"\0" * n


def main() -> None:
    if sys.argv[1] == "local":
        store = LocalObjectStore(sys.argv[2])
        source = StallingFile()
        source.passes = 1  # the local backend hashes while writing: one pass
    else:
        store = S3ObjectStore(
            sys.argv[2],
            os.environ.get("MXT_TEST_S3_ACCESS_KEY", "testing"),
            os.environ.get("MXT_TEST_S3_SECRET_KEY", "testing"),
            bucket_prefix=sys.argv[3],
        )
        source = StallingFile()
    store.put("raw", "obs/partial.fits", source)


if __name__ == "__main__":
    main()
