"""Localisation truth: simulated observations through the whole chain to a position.

Each scene goes through the simulator (L0, inverting every calibration step) and the
bricks ingest → calibrate → coordinates → screen → detect in process, and the reported
position is compared with the simulated truth. Scenes are short (200–300 s) and
seeded; the simulator is asked for exactly the sources under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from bricks.calibration import model_calibrations
from bricks.pipeline import run_bricks
from bricks.registry import get_brick
from bricks.simulate import Scene, Source, simulate

CHAIN = ("ingest", "calibrate", "coordinates", "screen", "detect")
RATE_PER_FLUX = 8.3e9
"""Detected counts/s per erg cm⁻² s⁻¹ near the axis (Γ = 2, NH = 1e21; the simulator's
``continuum_rate_on_axis``), used only to choose fluxes giving the counts wanted."""


def _run_chain(scene: Scene) -> tuple[dict, dict]:
    l0, truth = simulate(scene)
    products = run_bricks([get_brick(name) for name in CHAIN], {"l0": l0}, model_calibrations())
    return products["position"], truth


def _offset_arcsec(position: dict, ra: float, dec: float) -> float:
    found = SkyCoord(position["ra"], position["dec"], unit="deg")
    return float(found.separation(SkyCoord(ra, dec, unit="deg")).arcsec)


def _scene(
    seed: int,
    counts: float,
    duration: float,
    max_offset_deg: float,
    boresight: bool = False,
    decay_index: float = 0.0,
) -> Scene:
    """A random scene; with ``decay_index``, an afterglow observed from T0 + 100 s."""
    rng = np.random.default_rng(seed)
    ra_pnt, dec_pnt = rng.uniform(0, 360), rng.uniform(-70, 70)
    ra = ra_pnt + rng.uniform(-max_offset_deg, max_offset_deg) / np.cos(np.radians(dec_pnt))
    dec = dec_pnt + rng.uniform(-max_offset_deg, max_offset_deg)
    tstart = 288_000_000.0
    # seconds of flux-at-T0+100 s equivalent in [T0 + 100, T0 + 100 + duration]
    lag = 100.0
    if decay_index:
        end = (lag + duration) / lag
        equivalent = lag * (end ** (1.0 - decay_index) - 1.0) / (1.0 - decay_index)
    else:
        equivalent = duration
    source = Source(
        ra=ra % 360.0,
        dec=dec,
        flux=counts / equivalent / RATE_PER_FLUX,
        decay_index=decay_index,
        flux_time_s=lag,
    )
    return Scene(
        obs_id=f"truth{seed}",
        ra_pnt=ra_pnt,
        dec_pnt=dec_pnt,
        roll=rng.uniform(0, 360),
        tstart=tstart,
        trigger_time=tstart - lag if decay_index else None,
        duration=duration,
        sources=[source],
        seed=seed,
        boresight_error=boresight,
    )


def test_bright_afterglow_within_30_arcsec() -> None:
    scene = _scene(seed=101, counts=2500.0, duration=300.0, max_offset_deg=0.15, decay_index=1.2)
    position, truth = _run_chain(scene)
    source = truth["sources"][0]
    assert source["detected"] >= 2000
    assert position["status"] == "detected"
    offset = _offset_arcsec(position, source["ra"], source["dec"])
    print(
        f"bright: {source['detected']} counts, offset {offset:.1f}″, "
        f"err90 stat {position['err90_stat_arcsec']:.1f}″ total {position['err90_arcsec']:.1f}″"
    )
    assert offset < 30.0
    assert position["counts"] == pytest.approx(source["detected"], rel=0.15)


def test_faint_afterglow_within_2_arcmin() -> None:
    scene = _scene(seed=202, counts=210.0, duration=300.0, max_offset_deg=0.15, decay_index=1.2)
    position, truth = _run_chain(scene)
    source = truth["sources"][0]
    assert 150 <= source["detected"] <= 260
    assert position["status"] == "detected"
    offset = _offset_arcsec(position, source["ra"], source["dec"])
    print(
        f"faint: {source['detected']} counts, offset {offset:.1f}″, "
        f"err90 stat {position['err90_stat_arcsec']:.1f}″"
    )
    assert offset < 120.0
    assert position["err90_arcsec"] < 120.0


def test_statistical_radius_holds_the_truth_90_percent_of_the_time() -> None:
    """Over 50 random scenes (200–3,000 counts, any roll, up to 12′ off axis).

    The band 80–97 % (40–48 of 50) is what a right radius gives: 0.91 was measured over
    200 further scenes. An exact 90 % radius lands outside it with a binomial chance of
    4 % for 50 scenes against 7 % for 30 (where 29/30 sat on the upper edge). The seeds
    are fixed, so the outcome is reproducible; the fraction is printed.
    """
    inside, ratios, lines = 0, [], []
    n_scenes = 50
    for seed in range(n_scenes):
        counts = float(
            np.exp(np.random.default_rng(seed + 5000).uniform(np.log(200), np.log(3000)))
        )
        scene = _scene(seed=1000 + seed, counts=counts, duration=200.0, max_offset_deg=0.2)
        position, truth = _run_chain(scene)
        source = truth["sources"][0]
        assert position["status"] == "detected", f"scene {seed} ({counts:.0f} counts) missed"
        offset = _offset_arcsec(position, source["ra"], source["dec"])
        radius = position["err90_stat_arcsec"]
        inside += offset <= radius
        ratios.append(offset / radius)
        lines.append(f"{source['detected']:5d} counts  offset {offset:6.1f}″  r90 {radius:6.1f}″")
    fraction = inside / n_scenes
    print("\n".join(lines))
    print(
        f"coverage of the statistical 90 % radius: {fraction:.2f} ({inside}/{n_scenes}); "
        f"median offset/r90 {np.median(ratios):.2f} (0.55 for an exact radius)"
    )
    assert 0.80 <= fraction <= 0.97


def test_total_radius_holds_the_truth_with_a_boresight_error() -> None:
    """With the attitude off by a 25″ (90 %) boresight error, the total radius still holds."""
    inside, n_scenes = 0, 20
    for seed in range(n_scenes):
        scene = _scene(
            seed=4000 + seed, counts=800.0, duration=200.0, max_offset_deg=0.2, boresight=True
        )
        position, truth = _run_chain(scene)
        source = truth["sources"][0]
        offset = _offset_arcsec(position, source["ra"], source["dec"])
        inside += offset <= position["err90_arcsec"]
    print(f"coverage of the total 90 % radius with boresight errors: {inside}/{n_scenes}")
    assert 0.75 <= inside / n_scenes <= 1.0


def test_the_cross_arms_lie_where_the_roll_says() -> None:
    """On simulated data, the PSF turned by the attitude roll fits best.

    The core carries most of the position, so a wrong orientation barely moves the
    position; it shows in the likelihood: the data's arms must match the arms detect
    assumes (a sign error in the roll, −R, or a 45° error fit clearly worse).
    """
    from bricks.detect import BRICK, DetectConfig, localise_source
    from bricks.detect_search import Candidate
    from bricks.exposure import ExposureConfig, exposure_map

    calibration = model_calibrations()
    scene = Scene(
        obs_id="roll30",
        ra_pnt=150.0,
        dec_pnt=20.0,
        roll=30.0,
        duration=300.0,
        sources=[Source(ra=150.05, dec=20.05, flux=1e-9)],
        seed=7,
    )
    l0, _ = simulate(scene)
    chain = [get_brick(name) for name in CHAIN[:-1]]
    l2 = run_bricks(chain, {"l0": l0}, calibration)["l2_events"]
    position = BRICK({"l2_events": l2}, calibration)["position"]
    assert position["roll"] == pytest.approx(30.0, abs=0.1)
    events = l2["EVENTS"].data
    x, y = np.asarray(events["X"], float), np.asarray(events["Y"], float)
    expmap, _, _ = exposure_map(l2, calibration, ExposureConfig())
    source = Candidate(position["x"], position["y"], position["counts"], position["snr"], 0.0)
    pixel_arcmin = calibration["TELDEF"].plate_scale_arcsec / 60.0

    def strength(roll: float) -> float:
        relative = expmap / expmap.max()
        fit = localise_source(
            x, y, source, [source], relative, calibration["PSF"], roll, pixel_arcmin, DetectConfig()
        )
        return fit.ts

    right = strength(30.0)
    print(f"TS at the roll {right:.1f}, mirrored {strength(-30.0):.1f}, +45° {strength(75.0):.1f}")
    assert right > strength(-30.0) + 10.0
    assert right > strength(75.0) + 10.0
