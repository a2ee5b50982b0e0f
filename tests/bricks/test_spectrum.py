"""Spectrum brick: OGIP PHA, ARF and RMF on synthetic L2 scenes whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from pydantic import ValidationError

from bricks.calibration import model_calibrations
from bricks.errors import BadInput, Unprocessable
from bricks.spectral_fit import fit_spectrum_files
from bricks.spectrum import BRICK, SpectrumConfig
from tests.bricks.synthetic_l2 import Scene, _detector_from_sky, make_l2, position_of
from tests.bricks.test_lightcurve import assert_unchanged, snapshot

CAL = model_calibrations()


def _extract(gamma: float, seed: int = 21):
    scene = Scene(source_counts=20000, gamma=gamma, seed=seed)
    l2, truth = make_l2(scene)
    out = BRICK({"l2_events": l2, "position": position_of(truth)}, CAL, {})
    return scene, l2, truth, out


@pytest.fixture(scope="module")
def bright():
    return _extract(1.7)


def _fit(out):
    return fit_spectrum_files(out["src_pha"], out["bkg_pha"], out["arf"], out["rmf"])


@pytest.mark.parametrize("gamma", [1.7, 2.6])
def test_photon_index_is_recovered_through_arf_and_rmf(bright, gamma):
    scene, _, _, out = bright if gamma == bright[0].gamma else _extract(gamma, seed=22)
    fit = _fit(out)
    assert fit.gamma_err < 0.05
    assert abs(fit.gamma - scene.gamma) < 3 * fit.gamma_err + 0.02


def test_folded_model_accounts_for_the_whole_source(bright):
    """The fitted flux through the ARF (area x vignetting x PSF fraction) and the exposure
    gives back the net counts: the ARF's PSF fraction matches the BACKSCAL subtraction."""
    _, _, _, out = bright
    fit = _fit(out)
    src, bkg = out["src_pha"]["SPECTRUM"], out["bkg_pha"]["SPECTRUM"]
    good = src.data["QUALITY"] == 0
    ratio = src.header["BACKSCAL"] / bkg.header["BACKSCAL"]
    net = src.data["COUNTS"][good].sum() - ratio * bkg.data["COUNTS"][good].sum()
    model_net = fit.model_counts[good].sum() - ratio * bkg.data["COUNTS"][good].sum()
    assert model_net == pytest.approx(net, rel=0.03)


def test_net_counts_over_psf_fraction_give_the_source_counts(bright):
    scene, _, truth, out = bright
    src, bkg = out["src_pha"]["SPECTRUM"], out["bkg_pha"]["SPECTRUM"]
    ratio = src.header["BACKSCAL"] / bkg.header["BACKSCAL"]
    net = src.data["COUNTS"].sum() - ratio * bkg.data["COUNTS"].sum()
    whole = net / src.header["PSFFREFF"]
    # Source events drawn inside the GTIs, before the detector edges cut some of them.
    events = truth["source_events"]
    sigma = np.sqrt(src.data["COUNTS"].sum() + ratio**2 * bkg.data["COUNTS"].sum())
    assert abs(whole - events / _live_fraction_of_source(truth)) < 4 * sigma / 0.6


def _live_fraction_of_source(truth):
    """Fraction of the PSF falling on the live detector (edges, bad column), by sampling."""
    rng = np.random.default_rng(0)
    dx, dy = CAL["PSF"].sample(rng, 400_000)
    scale = CAL["TELDEF"].plate_scale_arcsec / 60.0
    sdx, sdy = _detector_from_sky(truth["x"] - 256.5, truth["y"] - 256.5, 30.0)
    rawx = np.floor(127.5 + sdx + dx / scale + 0.5)
    rawy = np.floor(127.5 + sdy + dy / scale + 0.5)
    live = (rawx >= 1) & (rawx <= 254) & (rawy >= 1) & (rawy <= 254) & (rawx != 187)
    return live.mean()


def test_backscal_is_the_live_region_area(bright):
    """BACKSCAL against an independent Monte Carlo of the regions on the live detector."""
    scene, _, truth, out = bright
    rng = np.random.default_rng(1)
    for name, r_in, r_out in (("src_pha", 0.0, "SRC_RAD"), ("bkg_pha", "BKG_RIN", "BKG_ROUT")):
        h = out[name]["SPECTRUM"].header
        scale = 60.0 / CAL["TELDEF"].plate_scale_arcsec
        inner = 0.0 if r_in == 0.0 else h[r_in] * scale
        outer = h[r_out] * scale
        n = 400_000
        radius = np.sqrt(rng.uniform(inner**2, outer**2, n))
        angle = rng.uniform(0, 2 * np.pi, n)
        dx, dy = _detector_from_sky(
            truth["x"] - 256.5 + radius * np.cos(angle),
            truth["y"] - 256.5 + radius * np.sin(angle),
            scene.roll_deg,
        )
        rawx, rawy = np.floor(127.5 + dx + 0.5), np.floor(127.5 + dy + 0.5)
        live = (rawx >= 1) & (rawx <= 254) & (rawy >= 1) & (rawy <= 254) & (rawx != 187)
        area = np.pi * (outer**2 - inner**2) * live.mean()
        assert h["BACKSCAL"] * 65536.0 == pytest.approx(area, rel=0.01), name


def test_ogip_pha_keywords(bright):
    _, _, _, out = bright
    for name, clas2 in (("src_pha", "TOTAL"), ("bkg_pha", "BKG")):
        hdu = out[name]["SPECTRUM"]
        h = hdu.header
        assert (h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS2"], h["HDUCLAS3"]) == (
            "OGIP",
            "SPECTRUM",
            clas2,
            "COUNT",
        )
        assert (h["HDUVERS"], h["CHANTYPE"], h["DETCHANS"]) == ("1.2.1", "PI", 1024)
        assert (h["TLMIN1"], h["TLMAX1"]) == (0, 1023)
        assert h["POISSERR"] is True
        assert (h["RESPFILE"], h["ANCRFILE"]) == ("mxt.rmf", "mxt.arf")
        for key in (
            "TELESCOP",
            "INSTRUME",
            "EXPOSURE",
            "BACKSCAL",
            "AREASCAL",
            "CORRFILE",
            "BACKFILE",
            "OBS_ID",
        ):
            assert key in h, key
        assert hdu.columns.names == ["CHANNEL", "COUNTS", "QUALITY", "GROUPING"]
        assert np.array_equal(hdu.data["CHANNEL"], np.arange(1024))
    assert out["src_pha"]["SPECTRUM"].header["BACKFILE"] == "mxt_bkg.pha"
    assert out["src_pha"]["SPECTRUM"].header["EXPOSURE"] == pytest.approx(3500.0)


def test_rmf_rows_are_normalised_gaussians_of_the_model_resolution(bright):
    _, _, _, out = bright
    matrix, ebounds = out["rmf"]["MATRIX"], out["rmf"]["EBOUNDS"]
    assert matrix.header["HDUCLAS3"] == "REDIST"
    assert (ebounds.header["CHANTYPE"], ebounds.header["DETCHANS"]) == ("PI", 1024)
    assert np.allclose(ebounds.data["E_MAX"] - ebounds.data["E_MIN"], 0.01, atol=1e-5)
    sums = np.array([row.sum() for row in matrix.data["MATRIX"]])
    assert np.all(np.abs(sums - 1.0) < 1e-4)
    # The 1.49-1.50 keV row: mean at its centre, FWHM = the model's at 1.5 keV.
    row = np.flatnonzero(np.isclose(matrix.data["ENERG_LO"], 1.49, atol=1e-4))[0]
    chans = matrix.data["F_CHAN"][row] + np.arange(matrix.data["N_CHAN"][row])
    p = matrix.data["MATRIX"][row]
    mean = np.sum(p * (chans + 0.5)) * 10.0
    sigma = np.sqrt(np.sum(p * ((chans + 0.5) * 10.0 - mean) ** 2) - 100.0 / 12.0)
    assert mean == pytest.approx(1495.0, abs=1.0)
    assert sigma * 2.3548 == pytest.approx(float(CAL["RESOL"].fwhm_ev(1495.0)), rel=0.02)


def test_arf_is_area_times_vignetting_times_psf_fraction(bright):
    _, _, truth, out = bright
    arf = out["arf"]["SPECRESP"]
    energy = 0.5 * (arf.data["ENERG_LO"] + arf.data["ENERG_HI"])
    fraction = out["src_pha"]["SPECTRUM"].header["PSFFREFF"]
    expected = CAL["SPECRESP"](energy) * truth["vignetting"] * fraction
    assert np.allclose(arf.data["SPECRESP"], expected, rtol=1e-5, atol=1e-7)
    assert arf.header["HDUCLAS2"] == "SPECRESP"
    assert arf.columns["SPECRESP"].unit == "cm**2"
    assert len(arf.data) == len(out["rmf"]["MATRIX"].data)


def test_no_detection_gives_empty_spectra_that_say_so(bright):
    _, l2, _, _ = bright
    out = BRICK({"l2_events": l2, "position": {"status": "no_detection"}}, CAL, {})
    for name in ("src_pha", "bkg_pha"):
        assert out[name]["SPECTRUM"].data["COUNTS"].sum() == 0
        assert out[name]["SPECTRUM"].header["SPECSTAT"] == "no_detection"
    assert "rmf" in out and "arf" in out


def test_bad_input_is_named(bright):
    _, l2, truth, _ = bright
    events = l2["EVENTS"]
    bad = events.data.copy()
    bad["PI"][0] = 5000
    hdul = fits.HDUList([l2[0], fits.BinTableHDU(bad, events.header, name="EVENTS"), l2["GTI"]])
    position = position_of(truth)
    position["x"], position["y"] = bad["X"][0], bad["Y"][0]
    with pytest.raises(BadInput, match="PI outside"):
        BRICK({"l2_events": hdul, "position": position}, CAL, {})
    with pytest.raises(BadInput, match="EVENTS"):
        BRICK({"l2_events": fits.HDUList([l2[0]]), "position": position}, CAL, {})
    with pytest.raises(BadInput, match="position"):
        BRICK({"l2_events": l2}, CAL, {})
    with pytest.raises(Unprocessable, match="off the live detector"):
        BRICK({"l2_events": l2, "position": {**position_of(truth), "x": 20.0, "y": 480.0}}, CAL, {})
    with pytest.raises(ValidationError, match="enclosed_fraction"):
        SpectrumConfig(enclosed_fraction=0.99)


def test_inputs_are_not_modified(bright):
    _, l2, truth, _ = bright
    before = snapshot(l2)
    BRICK({"l2_events": l2, "position": position_of(truth)}, CAL, {})
    assert_unchanged(l2, before)
