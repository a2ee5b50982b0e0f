"""The simulator: L0 structure, determinism, counts within Poisson expectations."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from bricks.calibration import Geometry, model_calibrations
from bricks.simulate import (
    KEV_TO_ERG,
    ORIGIN_COLUMN,
    ORIGIN_HOT,
    ORIGIN_PARTICLE,
    Scene,
    Source,
    absorbed_power_law,
    power_law_norm,
    simulate,
)


def _within_poisson(observed: int, expected: float, sigmas: float = 4.0) -> bool:
    return abs(observed - expected) <= sigmas * np.sqrt(max(expected, 1.0))


def test_l0_layout_follows_the_interface(bright_observation) -> None:
    l0, truth = bright_observation
    assert [h.name for h in l0] == ["PRIMARY", "EVENTS", "HK", "ATTITUDE"]
    events = l0["EVENTS"].data
    header = l0[0].header
    assert header["TELESCOP"] == "SVOM" and header["MJDREFI"] == 57754
    assert len(events) == truth["n_events"] > 1000
    assert np.all(np.diff(events["TIME"]) >= 0)
    expected_time = header["TSTART"] + (events["FRAME"] + 0.5) * 0.1
    assert np.allclose(events["TIME"], expected_time)
    assert events["RAWX"].min() >= 1 and events["RAWX"].max() <= 254
    assert events["RAWY"].min() >= 1 and events["RAWY"].max() <= 254
    assert events["PHAS"].shape == (len(events), 9)
    # the centre pixel is the local maximum of the 3 × 3 island for real photons
    phas = events["PHAS"].astype(int)
    assert np.mean(phas[:, 4] == phas.max(axis=1)) > 0.99


def test_same_seed_same_file_other_seed_other_file(bright_scene) -> None:
    first, _ = simulate(bright_scene)
    again, _ = simulate(bright_scene)
    other, _ = simulate(bright_scene.model_copy(update={"seed": 12}))
    for name in ("TIME", "RAWX", "RAWY", "PHAS"):
        assert np.array_equal(first["EVENTS"].data[name], again["EVENTS"].data[name])
    assert len(other["EVENTS"].data) != len(first["EVENTS"].data) or not np.array_equal(
        other["EVENTS"].data["RAWX"], first["EVENTS"].data["RAWX"]
    )


def test_counts_follow_the_rates() -> None:
    scene = Scene(duration=4000.0, sky_rate=0.0, seed=3)
    _, truth = simulate(scene)
    origin = truth["origin"]
    window = (254 / 256) ** 2  # outermost rows and columns are not transmitted
    assert _within_poisson(np.sum(origin == ORIGIN_PARTICLE), 0.3 * 4000 * window)
    assert _within_poisson(np.sum(origin == ORIGIN_HOT), 6 * 0.02 * 4000)
    assert _within_poisson(np.sum(origin == ORIGIN_COLUMN), 0.5 * 4000 * 254 / 256)


def test_source_photons_follow_flux_and_area(bright_observation) -> None:
    _, truth = bright_observation
    source = truth["sources"][0]
    assert _within_poisson(source["photons_drawn"], source["expected_photons"])
    # a 1e-10 erg/cm²/s Γ=2 source gives about 0.8 count/s through ~30 cm²
    assert 0.5 < source["continuum_rate_on_axis"] < 1.2
    # the source sits 6′ off axis: almost all of it lands on the 57′ detector
    assert 0.75 * source["photons_drawn"] < source["detected"] <= source["photons_drawn"]


def test_flux_normalisation_integrates_back() -> None:
    norm = power_law_norm(3e-11, 1.7, 0.5)
    e = np.geomspace(0.3, 10.0, 20001)
    flux = np.trapezoid(e * norm * absorbed_power_law(e, 1.7, 0.5), e) * KEV_TO_ERG
    assert flux == pytest.approx(3e-11, rel=1e-4)


def test_saa_and_occultation_remove_events() -> None:
    scene = Scene(
        duration=1000.0,
        sources=[Source(ra=180.0, dec=30.0, flux=1e-10)],
        saa=[(100.0, 300.0)],
        occultations=[(500.0, 700.0)],
        seed=4,
    )
    l0, truth = simulate(scene)
    t = l0["EVENTS"].data["TIME"] - scene.tstart
    assert not np.any((t >= 100.0) & (t < 300.0))
    occulted = (t >= 500.0) & (t < 700.0)
    assert occulted.sum() > 0  # particles and bad pixels continue
    assert not np.any(truth["origin"][occulted] >= 0)  # no source photons
    hk = l0["HK"].data
    hk_t = hk["TIME"] - scene.tstart
    assert hk["SAA"][(hk_t >= 100) & (hk_t < 300)].all() and not hk["SAA"][hk_t < 100].any()
    assert (hk["ELV"][(hk_t >= 500) & (hk_t < 700)] < 0).all()


def test_decaying_source_counts_fall_with_time(afterglow_scene) -> None:
    l0, truth = simulate(afterglow_scene)
    t = l0["EVENTS"].data["TIME"][truth["origin"] == 0] - afterglow_scene.trigger_time
    early = np.sum(t < 1000.0)
    late = np.sum(t >= 2300.0)  # same 700 s span later: (t/300)^-1.2 gives far fewer
    assert early > 3 * late
    assert l0[0].header["BURST_ID"] == "sb26022501"
    assert l0[0].header["TRIGTIME"] == afterglow_scene.trigger_time


def test_boresight_error_is_drawn_only_on_request(bright_scene) -> None:
    _, plain = simulate(bright_scene)
    assert plain["boresight_error_arcsec"] == (0.0, 0.0)
    radii = []
    for seed in range(200):
        scene = bright_scene.model_copy(
            update={"boresight_error": True, "seed": seed, "sources": []}
        )
        radii.append(np.hypot(*simulate(scene)[1]["boresight_error_arcsec"]))
    # 25″ is the 90 % radius of the systematic
    assert 0.8 < np.mean(np.array(radii) < 25.0) < 0.97


def test_scene_from_yaml_and_its_errors() -> None:
    text = """
    obs_id: yaml_scene
    duration: 100
    sources: [{ra: 10.0, dec: -5.0, flux: 1.0e-11, decay_index: 1.0}]
    trigger_time: 288000000
    tstart: 288000100
    """
    scene = Scene.model_validate(yaml.safe_load(text))
    assert scene.sources[0].dec == -5.0
    with pytest.raises(ValidationError, match="no trigger_time"):
        Scene(sources=[Source(ra=1.0, dec=1.0, flux=1e-11, decay_index=1.0)])
    with pytest.raises(ValidationError, match="fluxx"):
        Scene.model_validate({"sources": [{"ra": 1, "dec": 1, "fluxx": 1}]})


def test_empty_scene_gives_an_empty_events_table(empty_l0) -> None:
    assert len(empty_l0["EVENTS"].data) == 0
    assert len(empty_l0["HK"].data) == 51


def test_plate_scale_in_truth_matches_geometry() -> None:
    _, truth = simulate(Scene(duration=10.0))
    assert truth["plate_scale_arcsec"] == Geometry.model().plate_scale_arcsec
    assert set(model_calibrations()) >= {"PSF", "SPECRESP", "VIGNET"}


def test_cli_builds_the_caldb_and_simulates(tmp_path) -> None:
    import json

    from astropy.io import fits
    from click.testing import CliRunner

    from bricks.calibration import CODENAMES, calibration_from_hdulist
    from local.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["caldb", "build", "--out", str(tmp_path / "caldb")])
    assert result.exit_code == 0, result.output
    rebuilt = {}
    for path in sorted((tmp_path / "caldb").glob("*.fits")):
        with fits.open(path) as hdul:
            rebuilt.update(calibration_from_hdulist(hdul))
    assert set(rebuilt) == set(CODENAMES)
    assert len((tmp_path / "caldb" / "caldb.indx").read_text().splitlines()) == 1 + len(CODENAMES)
    out = tmp_path / "obs.fits"
    args = ["simulate", "--source", "180.1,30.05,1e-10,2.0,0.2", "--duration", "200"]
    args += ["--seed", "4", "--out", str(out), "--truth", str(tmp_path / "truth.json")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "truth.json").read_text())
    with fits.open(out) as hdul:
        assert len(hdul["EVENTS"].data) == truth["n_events"] > 0
    bad = runner.invoke(main, ["simulate", "--source", "1,2"])
    assert bad.exit_code != 0 and "RA,DEC,FLUX" in bad.output
