"""A function's log file is rotated by size, and a file that cannot be written never
stops the capture: the ring buffer and the followers go on, the file's lines are counted
as dropped, reported once, and the file is tried again later.

The faults are real: ``/dev/full`` answers every write with ENOSPC (a full disk), and a
log directory whose path is a regular file cannot be created, even by root.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway import logbook
from gateway.logbook import LogBook


def _lines(count: int, start: int = 0) -> list[str]:
    return [f"line {n:05d}" for n in range(start, start + count)]


def _files(path: Path) -> list[Path]:
    """The log file's rotated backups, oldest first, then the file itself."""
    backups = sorted(path.parent.glob(f"{path.name}.*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, path]


def test_rotation_keeps_the_newest_lines_in_at_most_n_backups(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "fn.log"
    book = LogBook("fn", path, capacity=5000, max_bytes=500, backups=2)
    texts = _lines(1000)
    for text in texts:
        book.add("fn-0", text)
    book.close()

    files = _files(path)
    assert [p.name for p in files] == ["fn.log.2", "fn.log.1", "fn.log"]
    assert all(p.stat().st_size <= 500 for p in files)
    kept = [line for p in files for line in p.read_text().splitlines()]
    assert kept == [f"fn-0 {text}" for text in texts[-len(kept) :]]  # the newest, in order
    assert 2 * 500 - 2 * 16 <= sum(p.stat().st_size for p in files) <= 3 * 500
    assert [line.text for line in book.tail()] == texts  # the ring buffer has every line
    assert book.dropped == 0


def test_no_backups_truncates_and_a_long_line_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "fn.log"
    book = LogBook("fn", path, max_bytes=100, backups=0)
    for text in _lines(50):
        book.add("i", text)
    book.add("i", "x" * 300)
    book.close()
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_text() == "i " + "x" * 300 + "\n"


def test_rotation_limits_come_from_the_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MXT_LOG_FILE_BYTES", "200")
    monkeypatch.setenv("MXT_LOG_FILE_BACKUPS", "1")
    book = LogBook("fn", tmp_path / "fn.log")
    assert (book.max_bytes, book.backups) == (200, 1)
    for text in _lines(100):
        book.add("i", text)
    book.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fn.log", "fn.log.1"]
    assert LogBook("g", tmp_path / "g.log", max_bytes=None, backups=None).max_bytes == 200


def test_a_full_disk_drops_file_lines_once_reported_and_recovers(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(logbook, "FLUSH_PERIOD", -1.0)  # every line goes to the disk at once
    monkeypatch.setattr(logbook, "RETRY_PERIOD", 0.0)  # the file is tried again at each line
    path = tmp_path / "fn.log"
    path.symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    book = LogBook("fn", path, max_bytes=1 << 20, backups=2)
    follower = book.follow()
    with caplog.at_level(logging.WARNING, logger="mxt.gateway.logs"):
        for text in _lines(50):
            book.add("fn-0", text)
        assert book.dropped == 50
        assert [line.text for line in book.tail()] == _lines(50)
        assert [follower.get_nowait().text for _ in range(50)] == _lines(50)
        for text in _lines(10, 50):
            book.add("fn-0", text)  # reopened, full again: still one report
        assert book.dropped == 60
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "No space left on device" in errors[0].getMessage()
        assert str(path) in errors[0].getMessage()

        path.unlink()  # space again: the next line reopens a real file
        book.add("fn-0", "back")
        book.close()
    assert path.read_text() == "fn-0 back\n"
    assert book.dropped == 60
    assert any("writable again; 60 line(s) dropped" in r.getMessage() for r in caplog.records)
    assert follower.qsize() == 11


def test_an_unwritable_log_directory_does_not_stop_the_capture(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log directory should be")
    with caplog.at_level(logging.ERROR, logger="mxt.gateway.logs"):
        book = LogBook("fn", blocker / "fn.log", max_bytes=1000, backups=1)
        follower = book.follow()
        for text in _lines(20):
            book.add("fn-0", text)
        book.close()
    assert [line.text for line in book.tail()] == _lines(20)
    assert follower.qsize() == 20
    assert book.dropped == 20
    assert len([r for r in caplog.records if "cannot be written" in r.getMessage()]) == 1


@pytest.mark.parametrize(("max_bytes", "backups"), [(0, 1), (100, -1)])
def test_invalid_limits_are_refused(tmp_path: Path, max_bytes: int, backups: int) -> None:
    with pytest.raises(ValueError, match="log file limits"):
        LogBook("fn", tmp_path / "fn.log", max_bytes=max_bytes, backups=backups)
