"""Every FITS product passes HEASARC's ``fitsverify`` (Debian package ``fitsverify``).

Errors fail the test; warnings are reported (as pytest warnings, with fitsverify's
lines) so that they show in the summary without failing it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

from astropy.io import fits

from bricks import lightcurve, spectrum
from bricks.calibration import model_calibrations
from bricks.pipeline import declared_products, run_pipeline, serialise_product
from bricks.registry import all_bricks
from bricks.simulate import Scene, Source, simulate
from tests.bricks.synthetic_l2 import Scene as SyntheticScene
from tests.bricks.synthetic_l2 import make_l2, position_of

CAL = model_calibrations()
SUMMARY = re.compile(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)")


def fitsverify(path: Path) -> tuple[int, int, str]:
    """Warnings, errors and the report of ``fitsverify`` on ``path``."""
    program = shutil.which("fitsverify")
    assert program, "fitsverify is not installed (Debian package fitsverify; .ci/run installs it)"
    report = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=120)
    found = SUMMARY.search(report.stdout + report.stderr)
    assert found, f"no fitsverify summary for {path.name}:\n{report.stdout}{report.stderr}"
    return int(found.group(1)), int(found.group(2)), report.stdout


def _check(directory: Path, products: dict, declared: dict) -> list[str]:
    checked = []
    for name, value in sorted(products.items()):
        product = declared[name]
        if product.kind != "fits":
            continue
        path = directory / product.filename
        path.write_bytes(serialise_product(product, value))
        n_warnings, n_errors, report = fitsverify(path)
        assert n_errors == 0, f"{product.filename}:\n{report}"
        if n_warnings:
            lines = [line for line in report.splitlines() if "Warning" in line]
            warnings.warn(f"fitsverify {product.filename}: {lines}", stacklevel=2)
        checked.append(product.filename)
    return checked


def test_product_bricks_files_pass_fitsverify(tmp_path):
    l2, truth = make_l2(SyntheticScene(source_counts=2000, seed=51))
    products = {"l2_events": l2, "position": position_of(truth)}
    made = {}
    for brick in (lightcurve.BRICK, spectrum.BRICK):
        made.update(brick(products, CAL, {}))
    made.update(
        {
            f"{k}_empty": v
            for k, v in spectrum.BRICK(
                {"l2_events": l2, "position": {"status": "no_detection"}}, CAL, {}
            ).items()
        }
    )
    declared = declared_products([lightcurve.BRICK, spectrum.BRICK])
    declared.update(
        {
            f"{k}_empty": p.__class__(p.name, f"empty_{p.filename}", p.kind)
            for k, p in declared.items()
        }
    )
    checked = _check(tmp_path, made, declared)
    assert {
        "mxt_lc.fits",
        "mxt_src.pha",
        "mxt_bkg.pha",
        "mxt.arf",
        "mxt.rmf",
        "empty_mxt_src.pha",
    } <= set(checked)


def test_every_fits_product_of_a_simulated_observation_passes_fitsverify(tmp_path):
    tstart = Scene().tstart
    scene = Scene(
        duration=600.0,
        trigger_time=tstart - 100.0,
        sources=[Source(ra=180.03, dec=30.02, flux=2e-10, decay_index=1.0)],
        seed=52,
    )
    l0, _ = simulate(scene)
    products = run_pipeline(l0, CAL)
    declared = declared_products(all_bricks())
    checked = _check(tmp_path, products, declared)
    expected = {p.filename for p in declared.values() if p.kind == "fits" and not p.optional}
    assert expected <= set(checked)
    # The L0 file itself, as the simulator writes it, is checked too.
    l0_path = tmp_path / "sim_mxt_l0.fits"
    fits.HDUList(l0).writeto(l0_path)
    assert fitsverify(l0_path)[1] == 0


def test_fitsverify_detects_a_broken_file(tmp_path):
    """The check can fail: a truncated product is reported with errors."""
    l2, truth = make_l2(SyntheticScene(source_counts=500, seed=53))
    out = spectrum.BRICK({"l2_events": l2, "position": position_of(truth)}, CAL, {})
    data = serialise_product(spectrum.SRC_PHA, out["src_pha"])
    path = tmp_path / "broken.pha"
    path.write_bytes(data[: len(data) - 2880 - 100])
    assert fitsverify(path)[1] > 0
