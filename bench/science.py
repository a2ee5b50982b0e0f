"""Science bench: events/s of every brick and of the in-process pipeline, and peak memory.

Prints figures, asserts nothing. For each size (default 1e5, 1e6, 1e7 events) an L0 file
is made once: simulated with ``bricks.simulate`` (afterglow + background) up to 1e6
events; the 1e7 file is the 1e6 simulation tiled ten times in time (simulating 1e7
photons directly costs minutes and several GB, which is the simulator's business, not
the pipeline's). Each pipeline run happens in a fresh child process that opens the L0
file (memory-mapped, like ``mxt pipeline run``) so that its peak RSS (``VmHWM`` of
``/proc/self/status``, which starts afresh at exec, unlike ``getrusage``'s
``ru_maxrss`` that a forked child inherits from its parent) is the pipeline's alone.

Usage: ``python bench/science.py [--sizes 1e5,1e6,1e7]``.
Targets (issue 4): every brick >= 2 M events/s; pipeline on 1e6 <= 3 s; 1e7 peak <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: Which product's rows a brick's events/s is counted on.
EVENTS_IN = {
    "ingest": "l0",
    "calibrate": "l0",
    "coordinates": "cal_events",
    "screen": "l1_events",
    "detect": "l2_events",
    "exposure": "l2_events",
    "lightcurve": "l2_events",
    "spectrum": "l2_events",
}
TILES_FOR_1E7 = 10


def _scene(n_events: int):
    """A ToO afterglow scene expected to give about ``n_events`` L0 events."""
    from bricks.simulate import Scene, Source

    duration = 2000.0
    rate = n_events / duration  # counts/s over the detector
    tstart = Scene().tstart
    source = Source(
        ra=180.02, dec=30.01, flux=2.0e-9 * rate * 0.4 / 50.0, decay_index=1.1, photon_index=2.0
    )
    return Scene(
        duration=duration,
        trigger_time=tstart - 100.0,
        sources=[source],
        particle_rate=0.5 * rate,
        sky_rate=0.1 * rate,
        seed=4,
        obs_id="bench",
    )


def _tile(l0, copies: int):
    """``copies`` back-to-back repetitions of an observation (events, HK, attitude)."""
    from astropy.io import fits

    from bricks.timeutil import iso_from_mission

    primary = l0[0].header
    span = float(primary["TSTOP"] - primary["TSTART"])
    frames = int(round(span / 0.1))
    out = fits.HDUList([fits.PrimaryHDU(header=primary.copy())])
    end = float(primary["TSTART"]) + span
    for hdu in l0[1:]:
        data = hdu.data
        # HK and attitude have a row at TSTOP too: repeat the rows before it, end once.
        body = np.flatnonzero(data["TIME"] < end)
        tail = np.flatnonzero(data["TIME"] >= end)
        index = np.concatenate([np.tile(body, copies), tail])
        shift = np.concatenate(
            [np.repeat(np.arange(copies), body.size), np.full(tail.size, copies - 1)]
        )
        # from_columns keeps the column definitions (units, TLMIN/TLMAX) and the header
        tiled = fits.BinTableHDU.from_columns(
            hdu.columns, header=hdu.header.copy(), nrows=index.size, name=hdu.name
        )
        for name in data.columns.names:
            column = data[name][index]
            if name == "TIME":
                column = column + shift * span
            elif name == "FRAME":
                column = column + shift * frames
            tiled.data[name] = column
        out.append(tiled)
    tstop = float(primary["TSTART"]) + copies * span
    for hdu in out:
        if "TSTOP" in hdu.header:
            hdu.header["TSTOP"] = tstop
        if "DATE-END" in hdu.header:
            hdu.header["DATE-END"] = iso_from_mission(tstop)
    return out


def make_l0_files(sizes: list[int], directory: Path) -> dict[int, tuple[Path, str]]:
    """One L0 file per size, with how it was made."""
    from bricks.simulate import simulate

    files: dict[int, tuple[Path, str]] = {}
    simulated: dict[int, object] = {}
    for size in sorted(sizes):
        path = directory / f"bench_{size:.0e}_mxt_l0.fits"
        started = time.perf_counter()
        if size <= 1_000_000:
            l0, _ = simulate(_scene(size))
            simulated[size] = l0
            how = "simulated"
        else:
            base = size // TILES_FOR_1E7
            if base not in simulated:
                simulated[base], _ = simulate(_scene(base))
            l0 = _tile(simulated[base], TILES_FOR_1E7)
            how = f"{base:.0e} simulation tiled x{TILES_FOR_1E7}"
        l0.writeto(path, overwrite=True)
        seconds = time.perf_counter() - started
        files[size] = (path, f"{how} in {seconds:.1f} s")
    return files


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark, MB."""
    return _status_mb("VmHWM")


def _warm_matplotlib() -> None:
    """Draw one small sky figure: loads fonts, WCSAxes and mathtext (~5 s cold, once)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bricks.wcs import sky_wcs

    fig = plt.figure(figsize=(2, 2))
    ax = fig.add_subplot(projection=sky_wcs(180.0, 30.0))
    ax.imshow(np.zeros((8, 8)), origin="lower")
    ax.plot([1, 2], [1, 2], label="warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


def run_one(path: Path) -> dict:
    """Child process: the pipeline on one L0 file; per-brick seconds and peak RSS."""
    from astropy.io import fits

    from bricks.calibration import model_calibrations
    from bricks.pipeline import run_pipeline

    calibration = model_calibrations()
    baseline_mb = peak_rss_mb()
    rows: dict[str, int] = {}
    seconds: dict[str, float] = {}
    after_mb: dict[str, float] = {}
    high_mb: dict[str, float] = {}

    def on_product(product, value, brick) -> None:
        if product.name in EVENTS_IN.values() and "EVENTS" in value:
            rows[product.name] = len(value["EVENTS"].data)

    def progress(event) -> None:
        if event.stage == "done":
            seconds[event.brick] = event.seconds
            # RSS once the brick's products exist and what nobody needs is dropped
            after_mb[event.brick] = _status_mb("VmRSS")
            high_mb[event.brick] = peak_rss_mb()

    # Import every brick and draw one throw-away sky figure before timing (the first
    # WCSAxes draw of a process costs seconds); a warm function pays neither.
    from bricks.registry import all_bricks

    all_bricks()
    _warm_matplotlib()

    with fits.open(path, memmap=True) as l0:
        rows["l0"] = len(l0["EVENTS"].data)
        started = time.perf_counter()
        run_pipeline(
            l0,
            calibration,
            {"notice": {"alert_datetime": "2026-01-01T00:00:00"}},
            progress,
            on_product,
            retain=False,
        )
        total = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    return {
        "rows": rows,
        "seconds": seconds,
        "total": total,
        "peak_mb": peak_mb,
        "baseline_mb": baseline_mb,
        "after_mb": after_mb,
        "high_mb": high_mb,
    }


def report(size: int, how: str, result: dict) -> None:
    rows, seconds = result["rows"], result["seconds"]
    n = rows["l0"]
    print(f"\n== {n:,} L0 events ({how}); {rows.get('l2_events', 0):,} after screening")
    print(
        f"{'brick':<12s} {'seconds':>9s} {'events in':>12s} {'M events/s':>11s} "
        f"{'RSS after':>10s} {'peak so far':>12s}  (target 2 M events/s)"
    )
    after, high = result["after_mb"], result["high_mb"]
    for brick, dt in seconds.items():
        source = EVENTS_IN.get(brick)
        if source is None or source not in rows:
            print(
                f"{brick:<12s} {dt:9.3f} {'-':>12s} {'-':>11s} {after[brick]:9.0f}M "
                f"{high[brick]:11.0f}M"
            )
            continue
        rate = rows[source] / dt / 1e6 if dt > 0 else float("inf")
        flag = "" if rate >= 2.0 else "  BELOW TARGET"
        print(
            f"{brick:<12s} {dt:9.3f} {rows[source]:12,d} {rate:11.2f} {after[brick]:9.0f}M "
            f"{high[brick]:11.0f}M{flag}"
        )
    print(f"{'pipeline':<12s} {result['total']:9.3f} {n:12,d} {n / result['total'] / 1e6:11.2f}")
    print(f"peak RSS {result['peak_mb']:.0f} MB (after imports {result['baseline_mb']:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_one(args.run_one)))
        return
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="mxt-bench-") as tmp:
        files = make_l0_files(sizes, Path(tmp))
        for size, (path, how) in files.items():
            child = subprocess.run(
                [sys.executable, __file__, "--run-one", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                print(f"\n== {size:.0e}: pipeline failed\n{child.stderr[-2000:]}")
                continue
            report(size, how, json.loads(child.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
