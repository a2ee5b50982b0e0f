"""``mxt demo --no-keep`` end to end: the real CLI starts a real stack, runs the ToO chain
on a simulated burst, reports what it found, and leaves no process of its data dir behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from local.natsd import free_port
from local.stack import read_state

DEMO_TIMEOUT = 600  # seconds: a hang guard only (a cold stack on two busy cores)
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _processes_of(data_dir: Path) -> list[str]:
    """Processes whose command line or MXT_DATA_DIR names ``data_dir`` (stack, functions, NATS)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            env_dir = proc.environ().get("MXT_DATA_DIR", "")
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
        if proc.status() == psutil.STATUS_ZOMBIE:
            continue
        if str(data_dir) in cmdline or env_dir == str(data_dir):
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


def test_demo_no_keep_finds_the_burst_and_stops_its_stack(tmp_path: Path) -> None:
    data_dir = (tmp_path / "demo-data").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXT_")}
    # the console script installed beside this interpreter (the venv need not be on PATH)
    beside = Path(sys.executable).parent / "mxt"
    mxt = str(beside) if beside.exists() else shutil.which("mxt")
    assert mxt, "the mxt console script is not installed in this environment"
    command = [mxt, "demo", "--no-keep", "--port", str(free_port())]
    command += ["--data-dir", str(data_dir), "--seed", "7"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=DEMO_TIMEOUT, check=False
    )
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, output

    radius = re.search(rf"^position .* error radius {NUMBER}″", done.stdout, re.MULTILINE)
    offset = re.search(rf"^truth .* offset {NUMBER}″", done.stdout, re.MULTILINE)
    assert radius and offset, output
    assert float(offset.group(1)) <= float(radius.group(1)), (offset.group(0), radius.group(0))

    products = re.search(r"^products\s+(\d+): (.+)$", done.stdout, re.MULTILINE)
    assert products, output
    names = products.group(2).split(", ")
    assert len(names) == int(products.group(1))
    assert "notice_json" in names and "notice_voevent" in names, names

    # the summary comes last and says what became of the stack
    summary = done.stdout[done.stdout.index("── summary") :]
    assert "succeeded" in summary and "stack      stopped (--no-keep)" in summary, summary
    assert "mxt down" not in summary  # nothing left to stop

    # the quick-look function drew its warm-up figures at start, without a fault
    quicklook_log = (data_dir / "logs" / "brick-quicklook.log").read_text()
    assert "quick-look figures warmed in" in quicklook_log
    assert "warm-up failed" not in quicklook_log

    assert _processes_of(data_dir) == []
    assert read_state(data_dir) is None  # no stack described as running on it


def test_demo_summary_says_how_to_log_in_when_the_stack_stays(tmp_path: Path, capsys) -> None:
    from local.demo import _summary

    run = {"run_id": "r-1", "state": "succeeded"}
    found = {"offset_arcsec": 3.0, "err90_arcsec": 20.0, "inside": "inside"}
    _summary(tmp_path, "http://127.0.0.1:9", run, found, 0.0, started=True, stopped=False)
    out = capsys.readouterr().out
    password_file = tmp_path / "secrets" / "basic-auth-password"
    assert f"login      user admin, password in {password_file}" in out
    assert "mxt users add" in out and "mxt down" in out
