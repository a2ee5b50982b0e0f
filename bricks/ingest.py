"""Ingest brick: validate an L0 file and describe the observation (obs_meta)."""

from __future__ import annotations

from typing import Any

from astropy.io import fits

from bricks.base import Brick, BrickConfig
from bricks.l0 import validate_l0
from bricks.products import L0, OBS_META

VERSION = "1.0.0"


class IngestConfig(BrickConfig):
    """The ingest brick has no parameters."""


def observation_metadata(hdul: fits.HDUList) -> dict[str, Any]:
    """The obs_meta dict of a valid L0 HDUList (times in mission s, angles in deg)."""
    header = hdul[0].header
    n_events = len(hdul["EVENTS"].data)
    return {
        "obs_id": header["OBS_ID"],
        "program": header["PROGRAM"],
        "object": header["OBJECT"],
        "ra_obj": float(header["RA_OBJ"]),
        "dec_obj": float(header["DEC_OBJ"]),
        "ra_pnt": float(header["RA_PNT"]),
        "dec_pnt": float(header["DEC_PNT"]),
        "pa_pnt": float(header["PA_PNT"]),
        "tstart": float(header["TSTART"]),
        "tstop": float(header["TSTOP"]),
        "duration": float(header["TSTOP"] - header["TSTART"]),
        "date_obs": header["DATE-OBS"],
        "date_end": header["DATE-END"],
        "trigger_time": float(header["TRIGTIME"]) if "TRIGTIME" in header else None,
        "burst_id": header.get("BURST_ID"),
        "n_events": n_events,
        "empty": n_events == 0,
        "creator": header["CREATOR"],
    }


def _run(inputs: dict[str, Any], calibration: dict[str, Any], config: IngestConfig) -> dict:
    l0 = inputs["l0"]
    validate_l0(l0)
    return {"obs_meta": observation_metadata(l0)}


BRICK = Brick(
    name="ingest",
    version=VERSION,
    inputs=(L0,),
    outputs=(OBS_META,),
    caldb=(),
    config=IngestConfig,
    run=_run,
)
