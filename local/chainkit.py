"""Standing up a processing stack on a data directory: shared by ``mxt demo``, the chain
tests and ``bench/chain.py``.

- :func:`prepare_data_dir`: migrate the database and ingest the model CALDB files the
  index lacks (idempotent);
- :func:`stack_subset`: a stack file listing only some of the repository's functions
  (the orchestrator and the bricks, say), plus any of a caller's own, so a stack starts
  in seconds;
- :func:`fits_bytes`: an HDUList as the bytes of a FITS file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml

from local.stack import write_stack_file

REPO = Path(__file__).resolve().parents[1]
REPO_STACK = REPO / "stack.yml"
#: the platform's test functions (echo, sleep, fail-n-times, hello-python3-http)
TEST_STACK = REPO / "tests" / "stack.yml"
CHAIN_FUNCTIONS = ("orchestrator", "brick-")


def fits_bytes(hdul: Any) -> bytes:
    """The bytes of ``hdul`` written as a FITS file (with checksums)."""
    buffer = io.BytesIO()
    hdul.writeto(buffer, checksum=True)
    return buffer.getvalue()


def prepare_data_dir(data_dir: Path, database_url: str | None = None) -> int:
    """Migrate the database and ingest the model CALDB; how many CALDB files were new.

    Parameters
    ----------
    data_dir
        The stack's data directory (objects under ``objects/``, SQLite ``mxt.db``).
    database_url
        The database; SQLite in ``data_dir`` when omitted.
    """
    from bricks.calibration import model_caldb_hdulists
    from storage.caldb.index import IngestOptions, ingest
    from storage.db.engine import make_engine, transaction, upgrade_to_head
    from storage.local import LocalObjectStore

    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{data_dir / 'mxt.db'}"
    upgrade_to_head(url)
    store = LocalObjectStore(data_dir / "objects")
    store.ensure_buckets()
    engine = make_engine(url)
    created = 0
    try:
        with transaction(engine) as db:
            for filename, hdul in model_caldb_hdulists().items():
                options = IngestOptions(filename=filename)
                created += ingest(db, store, fits_bytes(hdul), options).created
    finally:
        engine.dispose()
    return created


def stack_subset(
    target: Path,
    keep: tuple[str, ...] = CHAIN_FUNCTIONS,
    extra: dict[str, Any] | None = None,
    replace_handler: dict[str, Path] | None = None,
) -> Path:
    """Write a stack file with the repository's functions whose names start with ``keep``
    (those of ``stack.yml`` and the test functions of ``tests/stack.yml``).

    Parameters
    ----------
    target
        Where to write it (handler folders become absolute, so it may live anywhere).
    extra
        Functions to add or replace, as stack.yml entries.
    replace_handler
        Function name prefix → a handler folder serving every function with that prefix
        (the benchmarks' no-op bricks).
    """
    declared = [
        (path.parent, name, spec)
        for path in (REPO_STACK, TEST_STACK)
        for name, spec in yaml.safe_load(path.read_text())["functions"].items()
    ]
    functions = {}
    for directory, name, spec in declared:
        if not name.startswith(keep):
            continue
        handler = directory / spec["handler"]
        for prefix, folder in (replace_handler or {}).items():
            if name.startswith(prefix):
                handler = folder
        functions[name] = {**spec, "handler": str(handler)}
    functions.update(extra or {})
    return write_stack_file(target, functions)


def afterglow_scene(
    obs_id: str,
    program: str = "TargetOfOpportunity-Nom",
    seed: int = 3,
    duration: float = 1500.0,
    flux: float = 2e-10,
) -> Any:
    """A GRB X-ray afterglow 300 s after its trigger, 1.3′ off axis (about 1.4 events/s
    per 1e-9 erg/cm²/s of flux over the first 1500 s, plus the model backgrounds).

    Parameters
    ----------
    duration
        Observation length, s.
    flux
        Source flux at 300 s after the trigger, erg/cm²/s (it decays as t^-1.2).
    """
    from bricks.simulate import Scene, Source

    t0 = 288_000_000.0
    return Scene(
        obs_id=obs_id,
        program=program,
        burst_id="sb26022501",
        object="GRB 260225A",
        ra_pnt=45.0,
        dec_pnt=10.0,
        trigger_time=t0,
        tstart=t0 + 300.0,
        duration=duration,
        sources=[
            Source(ra=45.02, dec=10.01, flux=flux, decay_index=1.2, flux_time_s=300.0, nh=0.3)
        ],
        seed=seed,
    )
