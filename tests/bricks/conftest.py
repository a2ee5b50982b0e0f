"""Small simulated scenes shared by the brick tests (stable: other test modules use them).

- ``bright_scene``: one bright constant source 6′ off axis plus the model backgrounds,
  1,000 s, seeded (about 900 source events).
- ``bright_observation``: ``(l0, truth)`` of ``bright_scene`` (a fresh HDUList per test).
- ``afterglow_scene``: a decaying afterglow (α = 1.2) with a trigger time and burst id.
- ``empty_l0``: a valid L0 HDUList with no events.
- ``calibrations``: the model calibration objects keyed by codename.
"""

from __future__ import annotations

from typing import Any

import pytest
from astropy.io import fits

from bricks.calibration import model_calibrations
from bricks.simulate import Scene, Source, simulate


@pytest.fixture()
def calibrations() -> dict[str, Any]:
    return model_calibrations()


@pytest.fixture()
def bright_scene() -> Scene:
    return Scene(
        obs_id="test_bright",
        ra_pnt=150.0,
        dec_pnt=-20.0,
        roll=30.0,
        duration=1000.0,
        sources=[Source(ra=150.05, dec=-19.95, flux=1e-10, photon_index=2.0, nh=0.1)],
        seed=11,
    )


@pytest.fixture()
def bright_observation(bright_scene: Scene) -> tuple[fits.HDUList, dict[str, Any]]:
    return simulate(bright_scene)


@pytest.fixture()
def afterglow_scene() -> Scene:
    t0 = 288_000_000.0
    return Scene(
        obs_id="sb26022501_mxt",
        burst_id="sb26022501",
        object="GRB 260225A",
        ra_pnt=45.0,
        dec_pnt=10.0,
        trigger_time=t0,
        tstart=t0 + 300.0,
        duration=3000.0,
        sources=[
            Source(ra=45.02, dec=10.01, flux=2e-10, decay_index=1.2, flux_time_s=300.0, nh=0.3)
        ],
        seed=5,
    )


@pytest.fixture()
def empty_l0() -> fits.HDUList:
    scene = Scene(
        obs_id="empty",
        duration=50.0,
        particle_rate=0.0,
        sky_rate=0.0,
        hot_pixel_rate=0.0,
        bad_column_rate=0.0,
    )
    return simulate(scene)[0]
