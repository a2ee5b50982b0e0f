"""Real servers on free ports for tests and benchmarks: a child process serving until
the ``with`` block ends, and the moto S3 server (or an external S3 endpoint).

In the spirit of :mod:`local.natsd`: the same launcher serves ``tests/`` fixtures and
``bench/`` scripts, so both exercise the services the same way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from local.natsd import free_port, wait_for_port

#: set to use an S3 endpoint already running (MinIO, say) instead of starting moto
EXTERNAL_S3_VARIABLE = "MXT_TEST_S3_ENDPOINT"


@contextlib.contextmanager
def served_process(
    argv: list[str],
    port: int,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    ready_seconds: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (which listens on ``port``) until the block ends.

    Parameters
    ----------
    env
        Variables added to this process's environment.
    log
        File receiving the child's stdout and stderr (discarded when ``None``).
    ready_seconds
        How long the child may take to accept connections on ``port``, s.
    """
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the test run is not sent to it twice
        )
        try:
            wait_for_port("127.0.0.1", port, ready_seconds)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def moto_s3_endpoint() -> Iterator[str]:
    """URL of a real S3 protocol server: moto_server on a free port, or
    ``MXT_TEST_S3_ENDPOINT`` when set."""
    external = os.environ.get(EXTERNAL_S3_VARIABLE)
    if external:
        yield external
        return
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    with served_process([str(moto), "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"
