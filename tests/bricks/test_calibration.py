"""Model CALDB objects: values, FITS round trips, CALDB keywords; time and WCS helpers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from bricks import calibration as cal
from bricks import timeutil, wcs

REQUIRED_CALDB_KEYWORDS = (
    "TELESCOP",
    "INSTRUME",
    "DETNAM",
    "FILTER",
    "CCLS0001",
    "CDTP0001",
    "CCNM0001",
    "CVSD0001",
    "CVST0001",
    "CDES0001",
    "CBD10001",
    "HDUCLASS",
    "HDUCLAS1",
)


def _same(a: object, b: object) -> bool:
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            if not np.array_equal(va, vb):
                return False
        elif va != vb:
            return False
    return True


@pytest.mark.parametrize("codename", sorted(cal.CODENAMES))
def test_every_product_round_trips_through_fits_bytes(codename: str, tmp_path) -> None:
    product = cal.CODENAMES[codename].model()
    path = tmp_path / "x.fits"
    fits.HDUList([fits.PrimaryHDU(), product.to_hdu()]).writeto(path)
    with fits.open(path) as hdul:
        header = hdul[1].header
        for key in REQUIRED_CALDB_KEYWORDS:
            assert key in header, key
        assert header["CCNM0001"] == codename
        assert header["TELESCOP"] == "SVOM"
        rebuilt = cal.CODENAMES[codename].from_hdu(hdul[1])
    assert type(rebuilt) is type(product)
    assert _same(rebuilt, product)


def test_from_hdu_refuses_another_codename() -> None:
    with pytest.raises(ValueError, match="CCNM0001='GAIN'"):
        cal.Cti.from_hdu(cal.Gain.model().to_hdu())


def test_model_caldb_files_and_index() -> None:
    files = cal.model_caldb_hdulists()
    assert set(files) == {cal.caldb_filename(c) for c in cal.CODENAMES}
    assert "mxt_badpix_20240622v001.fits" in files
    rebuilt = {}
    for hdul in files.values():
        rebuilt.update(cal.calibration_from_hdulist(hdul))
    assert set(rebuilt) == set(cal.CODENAMES)
    lines = cal.caldb_index_lines(files)
    assert len(lines) == len(cal.CODENAMES)
    assert any(line.startswith("GAIN") and "TEMP(" in line for line in lines)


def test_model_values_follow_science_md() -> None:
    pedestal = cal.Pedestal.model().adu
    assert pedestal[0] == 95 and pedestal[1] == 102 and pedestal[187] == 100 + (7 * 187) % 11 - 5
    gain = cal.Gain.model()
    assert gain.ev_per_adu(np.array([-65.0, -55.0])) == pytest.approx([2.5, 2.55])
    assert cal.Resolution.model().fwhm_ev(1500.0) == pytest.approx(74.1, abs=0.5)
    assert cal.Geometry.model().plate_scale_arcsec == pytest.approx(13.45, abs=0.01)
    cti = cal.Cti.model()
    year = timeutil.SECONDS_PER_YEAR
    assert cti.coefficient(cti.epoch_mission_s + 2 * year) == pytest.approx(1.4e-5)
    assert cti.transfer_factor(cti.epoch_mission_s, 99) == pytest.approx((1 - 1e-5) ** 100)
    area = cal.EffectiveArea.model()
    assert area(np.array([0.1, 1.0, 10.0, 12.0])) == pytest.approx([0, 35, 0.3, 0])
    # log-log interpolation: the geometric mean of the neighbours half-way in log E
    assert area(np.sqrt(3.0 * 4.0)) == pytest.approx(np.sqrt(12.0 * 6.0))
    assert cal.Vignetting.model()(np.array([0.0, 30.0])) == pytest.approx([1.0, 0.9])


def test_bad_pixel_mask() -> None:
    mask = cal.BadPixels.model().mask()
    assert mask.shape == (256, 256)
    assert mask[201, 17] and mask[64, 64] and mask[140, 230]
    assert mask[:, 187].all()
    assert mask.sum() == 6 + 256


def test_psf_density_normalised_and_enclosed_fraction_consistent() -> None:
    psf = cal.Psf.model()
    step = 0.25
    grid = np.arange(-400, 400, step) + step / 2
    total = sum(psf.density(grid[:, None], row).sum() for row in np.array_split(grid, 8)) * step**2
    assert total == pytest.approx(1.0, abs=2e-3)
    radii = np.array([2.0, 8.0, 20.0, 45.0])
    dx, dy = psf.sample(np.random.default_rng(3), 400_000)
    sampled = (np.hypot(dx, dy)[:, None] < radii).mean(axis=0)
    assert psf.enclosed_fraction(radii) == pytest.approx(sampled, abs=4e-3)
    assert psf.enclosed_fraction(1e4) == pytest.approx(1.0)
    # arms lie along the detector axes: more photons along +RAWX than along a diagonal
    assert psf.density(20.0, 0.0) > 3 * psf.density(20 / np.sqrt(2), 20 / np.sqrt(2))


def test_mission_time_round_trip() -> None:
    assert timeutil.mission_seconds("2017-01-01T00:00:00") == 0.0
    assert timeutil.mission_seconds("2024-06-22") == 235785600.0
    assert timeutil.iso_from_mission(235785600.5) == "2024-06-22T00:00:00.500"
    with pytest.raises(ValueError, match="not an ISO 8601"):
        timeutil.mission_seconds("yesterday")


@pytest.mark.parametrize(("ra0", "dec0"), [(10.0, 20.0), (359.9, -5.0), (0.05, 0.0), (120.0, 89.9)])
def test_sky_pixels_agree_with_astropy_wcs(ra0: float, dec0: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 512, 200)
    y = rng.uniform(1, 512, 200)
    ra, dec = wcs.sky_to_radec(x, y, ra0, dec0)
    ra_ref, dec_ref = wcs.sky_wcs(ra0, dec0).all_pix2world(x, y, 1)
    assert np.allclose(dec, dec_ref, atol=1e-9)
    dra = (ra - ra_ref + 180.0) % 360.0 - 180.0
    assert np.allclose(dra * np.cos(np.radians(dec)), 0.0, atol=1e-9)
    x2, y2 = wcs.sky_pixels(ra, dec, ra0, dec0)
    assert np.allclose(x2, x, atol=1e-7) and np.allclose(y2, y, atol=1e-7)


def test_sky_orientation_north_up_east_left() -> None:
    x, y = wcs.sky_pixels(np.array([10.1, 10.0]), np.array([20.0, 20.1]), 10.0, 20.0)
    assert x[0] < wcs.SKY_REF_PIX and y[1] > wcs.SKY_REF_PIX


def test_detector_orientation_follows_roll() -> None:
    geometry = cal.Geometry.model()
    # ROLL = 0: +RAWY north (η > 0), +RAWX west (ξ < 0)
    xi, eta = wcs.detector_to_standard(np.array([0.0, 10.0]), np.array([10.0, 0.0]), 0.0, geometry)
    assert eta[0] > 0 and abs(xi[0]) < 1e-15 and xi[1] < 0 and abs(eta[1]) < 1e-15
    # ROLL = 90: +RAWY east
    xi, eta = wcs.detector_to_standard(0.0, 10.0, 90.0, geometry)
    assert xi > 0 and abs(eta) < 1e-12
    dx, dy = wcs.standard_to_detector(
        *wcs.detector_to_standard(3.0, -7.0, 237.0, geometry), 237.0, geometry
    )
    assert dx == pytest.approx(3.0) and dy == pytest.approx(-7.0)


def test_event_wcs_keywords_rebuild_the_image_wcs() -> None:
    columns = [fits.Column(name=n, format="E", array=np.zeros(1)) for n in ("TIME", "X", "Y")]
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header.update(wcs.event_wcs_keywords(150.0, -30.0, 2, 3))
    rebuilt = wcs.sky_wcs_from_events_header(hdu.header)
    assert isinstance(rebuilt, WCS)
    assert np.allclose(rebuilt.wcs.crval, [150.0, -30.0])
    assert rebuilt.wcs.cdelt[0] < 0 < rebuilt.wcs.cdelt[1]
    assert wcs.offaxis_arcmin(256.5 + 60 / 13.452052581332369 * 10, 256.5) == pytest.approx(10.0)
