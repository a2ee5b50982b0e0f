"""Ingest: every malformed L0 is rejected with a reason naming the problem."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from bricks.errors import Unprocessable
from bricks.ingest import BRICK
from bricks.l0 import read_l0_bytes


def _bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def _replace_column(hdul: fits.HDUList, hdu: str, name: str, column: fits.Column) -> None:
    table = hdul[hdu]
    columns = [column if c.name == name else c for c in table.columns]
    new = fits.BinTableHDU.from_columns(columns, header=table.header, name=hdu)
    hdul[hdul.index_of(hdu)] = new


def _ingest(hdul: fits.HDUList) -> dict:
    return BRICK({"l0": hdul}, {})["obs_meta"]


def test_valid_observation_gives_its_metadata(afterglow_scene) -> None:
    from bricks.simulate import simulate

    l0, truth = simulate(afterglow_scene)
    meta = _ingest(read_l0_bytes(_bytes(l0)))
    assert meta["obs_id"] == "sb26022501_mxt"
    assert meta["burst_id"] == "sb26022501"
    assert meta["trigger_time"] == afterglow_scene.trigger_time
    assert meta["n_events"] == truth["n_events"] > 0
    assert meta["duration"] == pytest.approx(3000.0)
    assert meta["program"] == "TargetOfOpportunity-Nom"
    assert not meta["empty"]


def test_empty_observation_is_valid(empty_l0) -> None:
    meta = _ingest(read_l0_bytes(_bytes(empty_l0)))
    assert meta["n_events"] == 0 and meta["empty"] is True
    assert meta["trigger_time"] is None and meta["burst_id"] is None


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda b: b[:-2880], "truncated or corrupt"),
        (lambda b: b[: len(b) // 2 + 100], "not a multiple of the 2880-byte"),
        (lambda b: b"", "empty"),
        (lambda b: b"PK\x03\x04" + b"\0" * 2876, "not FITS"),
    ],
)
def test_truncated_or_corrupt_bytes(bright_observation, cut, message) -> None:
    data = _bytes(bright_observation[0])
    with pytest.raises(Unprocessable, match=message):
        read_l0_bytes(cut(data))


def test_missing_extension(bright_observation) -> None:
    l0 = bright_observation[0]
    del l0["HK"]
    with pytest.raises(Unprocessable, match=r"lacks extension\(s\) \['HK'\]"):
        _ingest(l0)


def test_extensions_out_of_order(bright_observation) -> None:
    l0 = bright_observation[0]
    hk, att = l0["HK"], l0["ATTITUDE"]
    l0[2], l0[3] = att, hk
    with pytest.raises(Unprocessable, match="extension 2 is 'ATTITUDE', expected 'HK'"):
        _ingest(l0)


def test_wrong_column_type(bright_observation) -> None:
    l0 = bright_observation[0]
    rawx = l0["EVENTS"].data["RAWX"].astype(np.float32)
    _replace_column(l0, "EVENTS", "RAWX", fits.Column("RAWX", "E", unit="pixel", array=rawx))
    with pytest.raises(Unprocessable, match="EVENTS column RAWX has format E, expected 1I") as info:
        _ingest(l0)
    assert info.value.detail == {"hdu": "EVENTS", "column": "RAWX"}


def test_wrong_unit(bright_observation) -> None:
    l0 = bright_observation[0]
    elv = l0["HK"].data["ELV"]
    _replace_column(l0, "HK", "ELV", fits.Column("ELV", "E", unit="rad", array=elv))
    with pytest.raises(Unprocessable, match="HK column ELV has unit 'rad', expected 'deg'"):
        _ingest(l0)


def test_missing_column(bright_observation) -> None:
    l0 = bright_observation[0]
    table = l0["ATTITUDE"]
    columns = [c for c in table.columns if c.name != "ROLL"]
    l0[3] = fits.BinTableHDU.from_columns(columns, header=table.header, name="ATTITUDE")
    with pytest.raises(Unprocessable, match="ATTITUDE lacks column ROLL"):
        _ingest(l0)


def test_nans_are_named(bright_observation) -> None:
    l0 = bright_observation[0]
    temp = l0["HK"].data["CCD_TEMP"].copy()
    temp[[3, 7]] = np.nan
    _replace_column(l0, "HK", "CCD_TEMP", fits.Column("CCD_TEMP", "E", unit="Celsius", array=temp))
    with pytest.raises(Unprocessable, match="HK column CCD_TEMP has 2 NaN"):
        _ingest(l0)


def test_events_outside_the_detector(bright_observation) -> None:
    l0 = bright_observation[0]
    l0["EVENTS"].data["RAWY"][[0, 5, 9]] = 300
    with pytest.raises(Unprocessable, match=r"RAWY has 3 event\(s\) outside the detector"):
        _ingest(l0)


def test_events_on_the_edge_rows_are_accepted(bright_observation) -> None:
    # rows 0 and 255 are on the detector but not transmitted: accepted, flagged later
    l0 = bright_observation[0]
    l0["EVENTS"].data["RAWX"][0] = 0
    assert _ingest(l0)["n_events"] == len(l0["EVENTS"].data)


def test_unsorted_times(bright_observation) -> None:
    l0 = bright_observation[0]
    data = l0["EVENTS"].data
    later = int(np.flatnonzero(data["FRAME"] > data["FRAME"][20])[0])
    for column in ("TIME", "FRAME"):
        data[column][[20, later]] = data[column][[later, 20]]
    with pytest.raises(Unprocessable, match="EVENTS column TIME is not sorted"):
        _ingest(l0)


def test_time_outside_the_observation(bright_observation) -> None:
    l0 = bright_observation[0]
    l0[0].header["TSTOP"] = l0["EVENTS"].data["TIME"][-1] - 5.0
    with pytest.raises(Unprocessable, match="outside TSTART-TSTOP"):
        _ingest(l0)


def test_time_not_on_the_frame_grid(bright_observation) -> None:
    l0 = bright_observation[0]
    l0["EVENTS"].data["TIME"][0] += 0.03
    with pytest.raises(Unprocessable, match=r"disagrees with TSTART \+ \(FRAME \+ 0.5\)"):
        _ingest(l0)


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("TELESCOP", "SWIFT", "TELESCOP='SWIFT', expected 'SVOM'"),
        ("MJDREFI", 51910, "MJDREFI=51910, expected 57754"),
        ("PROGRAM", "Survey", "PROGRAM='Survey' is not one of"),
        ("OBS_ID", "bad id!", "OBS_ID='bad id!' must be 1-32 characters"),
        ("RA_PNT", "12h", "RA_PNT='12h' should be a float"),
        ("DEC_OBJ", 95.0, r"DEC_OBJ=95.0 is outside \[-90, 90\]"),
        ("TSTOP", 1.0, "TSTOP=1.0 is not after TSTART"),
    ],
)
def test_wrong_keyword_values(bright_observation, keyword, value, message) -> None:
    l0 = bright_observation[0]
    l0[0].header[keyword] = value
    with pytest.raises(Unprocessable, match=message) as info:
        _ingest(l0)
    assert info.value.detail["keyword"] == keyword


def test_missing_keyword(bright_observation) -> None:
    l0 = bright_observation[0]
    del l0[0].header["DATE-OBS"]
    with pytest.raises(Unprocessable, match="primary header lacks keyword DATE-OBS"):
        _ingest(l0)


def test_empty_housekeeping_is_refused(empty_l0) -> None:
    table = empty_l0["HK"]
    empty_l0[2] = fits.BinTableHDU(data=table.data[:0], header=table.header, name="HK")
    assert len(empty_l0["HK"].data) == 0
    with pytest.raises(Unprocessable, match="HK table has no rows"):
        _ingest(empty_l0)
