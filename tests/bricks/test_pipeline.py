"""The in-process pipeline, product (de)serialisation and ``mxt pipeline run``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from bricks import lightcurve, quicklook, spectrum
from bricks.base import Product
from bricks.calibration import model_caldb_hdulists, model_calibrations
from bricks.errors import BadInput, NotFound, Unprocessable
from bricks.pipeline import (
    content_digest,
    declared_products,
    deserialise_product,
    run_bricks,
    run_pipeline,
    serialise_product,
)
from bricks.registry import all_bricks
from bricks.simulate import Scene, Source, simulate
from bricks.spectral_fit import fit_spectrum_files
from bricks.wcs import sky_wcs
from tests.bricks.synthetic_l2 import DEC_PNT, RA_PNT, make_l2, position_of
from tests.bricks.synthetic_l2 import Scene as SyntheticScene

CAL = model_calibrations()
FITS = Product("thing", "thing.fits", "fits")
# The notice is stamped with the time it is issued unless told: fix it to compare runs.
FIXED_NOTICE_TIME = {"notice": {"alert_datetime": "2026-02-25T12:30:00"}}
JSON = Product("meta", "meta.json", "json")


# --- serialisation -----------------------------------------------------------------


def _small_hdulist() -> fits.HDUList:
    table = fits.BinTableHDU.from_columns([fits.Column("A", "E", array=np.arange(5.0))], name="T")
    table.header["DATE"] = "2026-01-01T00:00:00"
    return fits.HDUList([fits.PrimaryHDU(), table])


def test_fits_round_trip_is_byte_identical():
    data = serialise_product(FITS, _small_hdulist())
    assert serialise_product(FITS, _small_hdulist()) == data
    again = deserialise_product(FITS, data)
    assert np.array_equal(again["T"].data["A"], np.arange(5.0))
    assert serialise_product(FITS, again) == data


def test_content_digest_ignores_date_but_not_data_or_other_keywords():
    reference = content_digest(FITS, serialise_product(FITS, _small_hdulist()))
    redated = _small_hdulist()
    redated["T"].header["DATE"] = "2027-05-05T05:05:05"
    assert content_digest(FITS, serialise_product(FITS, redated)) == reference
    changed = _small_hdulist()
    changed["T"].data["A"][2] = 99.0
    assert content_digest(FITS, serialise_product(FITS, changed)) != reference
    rekeyed = _small_hdulist()
    rekeyed["T"].header["OBS_ID"] = "other"
    assert content_digest(FITS, serialise_product(FITS, rekeyed)) != reference


def test_json_text_png_round_trip():
    value = {"ra": np.float64(1.5), "n": np.int64(3), "flag": np.bool_(True), "none": None}
    data = serialise_product(JSON, value)
    assert deserialise_product(JSON, data) == {"ra": 1.5, "n": 3, "flag": True, "none": None}
    text = Product("region", "r.reg", "text")
    assert deserialise_product(text, serialise_product(text, "circle(1,2,3)")) == "circle(1,2,3)"
    png = Product("pic", "p.png", "png")
    assert deserialise_product(png, serialise_product(png, b"\x89PNG\r\n")) == b"\x89PNG\r\n"


@pytest.mark.parametrize(
    ("product", "value", "match"),
    [
        (JSON, {"x": float("nan")}, "meta is not valid JSON"),
        (JSON, {"x": object()}, "meta is not valid JSON"),
        (FITS, {"a": 1}, "thing should be an HDUList"),
        (Product("pic", "p.png", "png"), b"GIF89a", "pic should be PNG"),
        (Product("r", "r.reg", "text"), b"bytes", "r should be text"),
        (Product("odd", "o.x", "yaml"), "x", "unknown kind"),
    ],
)
def test_values_that_do_not_fit_their_kind_are_named(product, value, match):
    with pytest.raises(Unprocessable, match=match):
        serialise_product(product, value)


def test_unreadable_bytes_are_named():
    data = serialise_product(FITS, _small_hdulist())
    with pytest.raises(Unprocessable, match="thing is a truncated FITS file"):
        deserialise_product(FITS, data[:3000])
    with pytest.raises(Unprocessable, match="HDU 1 needs 2880 data bytes, 2870 present"):
        deserialise_product(FITS, data[:-10])
    with pytest.raises(Unprocessable, match="thing is a truncated FITS file"):
        deserialise_product(FITS, b"SIMPLE  = nonsense")
    with pytest.raises(Unprocessable, match="meta is not valid JSON"):
        deserialise_product(JSON, b"{not json")
    with pytest.raises(Unprocessable, match="truncated"):
        content_digest(FITS, data[:6000])


# --- running bricks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_products():
    l2, truth = make_l2(SyntheticScene(source_counts=4000, seed=41))
    events = l2["EVENTS"].data
    counts, _, _ = np.histogram2d(
        events["Y"], events["X"], bins=512, range=[[0.5, 512.5], [0.5, 512.5]]
    )
    header = sky_wcs(RA_PNT, DEC_PNT).to_header()
    image = fits.HDUList([fits.PrimaryHDU(counts.astype(np.int32), header)])
    return {"l2_events": l2, "position": position_of(truth), "image": image}


PRODUCT_BRICKS = [lightcurve.BRICK, spectrum.BRICK, quicklook.BRICK]


def test_run_bricks_reports_progress_and_returns_every_product(synthetic_products):
    events, seen = [], []
    made = run_bricks(
        PRODUCT_BRICKS,
        synthetic_products,
        CAL,
        progress=events.append,
        on_product=lambda product, value, brick: seen.append(product.name),
    )
    assert [(e.brick, e.stage) for e in events] == [
        ("lightcurve", "start"),
        ("lightcurve", "done"),
        ("spectrum", "start"),
        ("spectrum", "done"),
        ("quicklook", "start"),
        ("quicklook", "done"),
    ]
    assert all(e.total == 3 for e in events)
    assert sorted(made) == sorted(seen) == sorted(declared_products(PRODUCT_BRICKS))
    assert "l2_events" not in made


def test_a_brick_without_its_inputs_is_skipped_with_the_reason(synthetic_products):
    events = []
    products = {k: v for k, v in synthetic_products.items() if k != "image"}
    made = run_bricks(PRODUCT_BRICKS, products, CAL, progress=events.append)
    skipped = [e for e in events if e.stage == "skipped"]
    assert [(e.brick, e.reason) for e in skipped] == [("quicklook", "no image")]
    assert "ql_image" not in made and "src_pha" in made


def test_without_retain_only_unconsumed_products_are_dropped_early(synthetic_products):
    seen = []
    made = run_bricks(
        PRODUCT_BRICKS,
        synthetic_products,
        CAL,
        retain=False,
        on_product=lambda product, value, brick: seen.append(product.name),
    )
    assert sorted(seen) == sorted(declared_products(PRODUCT_BRICKS))
    assert made == {}  # everything was handed to on_product and nothing is kept


def test_config_and_caldb_problems_are_named_before_running(synthetic_products):
    with pytest.raises(BadInput, match=r"unknown brick\(s\) \['lightcurv'\]"):
        run_bricks(PRODUCT_BRICKS, synthetic_products, CAL, {"lightcurv": {}})
    with pytest.raises(BadInput, match="brick lightcurve: bin_s"):
        run_bricks(PRODUCT_BRICKS, synthetic_products, CAL, {"lightcurve": {"bin_s": 0}})
    with pytest.raises(BadInput, match="brick spectrum: colour"):
        run_bricks(PRODUCT_BRICKS, synthetic_products, CAL, {"spectrum": {"colour": 1}})
    partial = {k: v for k, v in CAL.items() if k != "RESOL"}
    with pytest.raises(NotFound, match=r"\['RESOL'\] needed by brick spectrum"):
        run_bricks(PRODUCT_BRICKS, synthetic_products, partial)


# --- the whole pipeline on simulated observations -------------------------------------


def _afterglow_scene(duration: float = 2000.0, seed: int = 7) -> Scene:
    tstart = Scene().tstart
    source = Source(ra=180.04, dec=30.03, flux=3e-10, decay_index=1.2, photon_index=2.0, nh=0.1)
    return Scene(
        duration=duration,
        trigger_time=tstart - 300.0,
        sources=[source],
        seed=seed,
        obs_id="pipetest01",
    )


@pytest.fixture(scope="module")
def afterglow(tmp_path_factory):
    l0, truth = simulate(_afterglow_scene())
    path = tmp_path_factory.mktemp("l0") / "pipetest01_mxt_l0.fits"
    l0.writeto(path)
    return path, truth, run_pipeline(fits.open(path), CAL, FIXED_NOTICE_TIME)


def test_pipeline_makes_every_declared_product(afterglow):
    _, _, products = afterglow
    expected = {name for name, p in declared_products(all_bricks()).items() if not p.optional}
    assert expected <= set(products)


def test_pipeline_recovers_decay_and_photon_index(afterglow):
    _, truth, products = afterglow
    assert truth["sources"][0]["detected"] >= 2000
    assert products["position"]["status"] == "detected"
    fit = products["lightcurve_fit"]
    assert fit["status"] == "ok"
    assert abs(fit["alpha"] - 1.2) < 0.15
    spectral = fit_spectrum_files(
        products["src_pha"], products["bkg_pha"], products["arf"], products["rmf"]
    )
    assert abs(spectral.gamma - 2.0) < 3 * spectral.gamma_err + 0.05
    assert abs(spectral.nh - 0.1) < 0.05


def test_empty_observation_gives_products_that_say_so():
    l0, _ = simulate(_afterglow_scene(duration=200.0))
    events = l0["EVENTS"]
    l0["EVENTS"] = fits.BinTableHDU(events.data[:0], events.header, name="EVENTS")
    products = run_pipeline(l0, CAL)
    assert products["position"]["status"] != "detected"
    assert products["lightcurve_fit"]["status"] in ("no_detection", "no_events")
    assert products["src_pha"]["SPECTRUM"].data["COUNTS"].sum() == 0
    assert all(products[n].startswith(b"\x89PNG") for n in ("ql_image", "ql_spectrum"))


# --- mxt pipeline run ---------------------------------------------------------------


def _mxt(*args: str) -> subprocess.CompletedProcess:
    mxt = Path(sys.executable).parent / "mxt"  # the installed entry point, a real process
    return subprocess.run([str(mxt), *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_the_products_the_in_process_run_makes(afterglow, tmp_path):
    """Products from a real ``mxt pipeline run`` process, reading the CALDB from files and a
    config from YAML, have the content of the in-process run's products."""
    path, _, products = afterglow
    caldb = tmp_path / "caldb"
    caldb.mkdir()
    for name, hdul in model_caldb_hdulists().items():
        hdul.writeto(caldb / name)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(FIXED_NOTICE_TIME))  # YAML is a superset of JSON
    out = tmp_path / "out"
    result = _mxt(
        "pipeline",
        "run",
        str(path),
        "--out",
        str(out),
        "--caldb",
        str(caldb),
        "--config",
        str(config),
    )
    assert result.returncode == 0, result.stderr
    assert "[10/10] quicklook" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["config"] == FIXED_NOTICE_TIME
    assert {f["codenames"] for f in manifest["caldb"]} >= {"PSF", "SPECRESP", "RESOL"}
    declared = declared_products(all_bricks())
    for entry in manifest["products"]:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["size"]
        product = declared[entry["name"]]
        reference = serialise_product(product, products[entry["name"]])
        assert content_digest(product, data) == content_digest(product, reference), entry
    assert {e["name"] for e in manifest["products"]} == set(products)
    assert manifest["brick_versions"]["spectrum"] == spectrum.VERSION


def test_cli_names_bad_input_and_records_the_failure(afterglow, tmp_path):
    """The command in this process (click's runner): a real process is tested above."""
    from click.testing import CliRunner

    from local.cli_pipeline import pipeline

    path, _, _ = afterglow
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(path.read_bytes()[:5000])
    runner = CliRunner()
    result = runner.invoke(pipeline, ["run", str(truncated), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1  # unprocessable, not a crash
    assert isinstance(result.exception, SystemExit)
    assert "error (unprocessable)" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]["reason"]
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("spectrum: {colour: red}\n")
    result = runner.invoke(
        pipeline, ["run", str(path), "--out", str(tmp_path / "o2"), "--config", str(bad_config)]
    )
    assert result.exit_code == 2
    assert "config of brick spectrum: colour" in result.output
