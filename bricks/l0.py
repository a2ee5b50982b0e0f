"""The L0 raw observation file (L0_FORMAT.md): its definition, a writer and a byte reader.

The column and keyword tables here are the single source of truth for the simulator
(which writes L0 files), the ingest brick (which validates them) and docs/formats.md.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from bricks.errors import Unprocessable
from bricks.timeutil import TIME_KEYWORDS

FRAME_TIME_S = 0.1
RAW_MIN, RAW_MAX = 1, 254  # transmitted pixel range; the outermost rows/columns are not
DETECTOR_TLMIN, DETECTOR_TLMAX = 0, 255
HDU_NAMES = ("EVENTS", "HK", "ATTITUDE")
PROGRAMMES = (
    "CoreProgram",
    "GeneralProgram",
    "TargetOfOpportunity-Nom",
    "TargetOfOpportunity-Ex",
    "TargetOfOpportunity-MM",
    "Calibration",
)
OBS_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# column name -> (TFORM, TUNIT)
EVENTS_COLUMNS: dict[str, tuple[str, str | None]] = {
    "TIME": ("1D", "s"),
    "FRAME": ("1J", None),
    "RAWX": ("1I", "pixel"),
    "RAWY": ("1I", "pixel"),
    "PHAS": ("9I", "adu"),
}
HK_COLUMNS: dict[str, tuple[str, str | None]] = {
    "TIME": ("1D", "s"),
    "CCD_TEMP": ("1E", "Celsius"),
    "SAA": ("1L", None),
    "ELV": ("1E", "deg"),
}
ATTITUDE_COLUMNS: dict[str, tuple[str, str | None]] = {
    "TIME": ("1D", "s"),
    "RA": ("1D", "deg"),
    "DEC": ("1D", "deg"),
    "ROLL": ("1D", "deg"),
}
COLUMNS_BY_HDU = {"EVENTS": EVENTS_COLUMNS, "HK": HK_COLUMNS, "ATTITUDE": ATTITUDE_COLUMNS}

# primary keyword -> (python type, required)
PRIMARY_KEYWORDS: dict[str, tuple[type, bool]] = {
    "TELESCOP": (str, True),
    "INSTRUME": (str, True),
    "OBS_ID": (str, True),
    "PROGRAM": (str, True),
    "OBJECT": (str, True),
    "RA_OBJ": (float, True),
    "DEC_OBJ": (float, True),
    "RA_PNT": (float, True),
    "DEC_PNT": (float, True),
    "PA_PNT": (float, True),
    "TSTART": (float, True),
    "TSTOP": (float, True),
    "TIMESYS": (str, True),
    "MJDREFI": (int, True),
    "MJDREFF": (float, True),
    "TIMEUNIT": (str, True),
    "DATE-OBS": (str, True),
    "DATE-END": (str, True),
    "DSTREAM": (str, True),
    "CREATOR": (str, True),
    "TRIGTIME": (float, False),
    "BURST_ID": (str, False),
}
FIXED_PRIMARY_VALUES: dict[str, Any] = {
    "TELESCOP": "SVOM",
    "INSTRUME": "MXT",
    "TIMESYS": "TT",
    "MJDREFI": 57754,
    "MJDREFF": 0.0,
    "TIMEUNIT": "s",
    "DSTREAM": "XBand",
}
# keywords every extension repeats from the primary header
EXTENSION_KEYWORDS = ("TELESCOP", "INSTRUME", "OBS_ID", "TSTART", "TSTOP")


def normalise_tform(tform: str) -> str:
    """``"D"`` and ``"1D"`` are the same FITS format: give the explicit-repeat form."""
    tform = tform.strip().upper()
    return tform if tform[:1].isdigit() else "1" + tform


def frame_times(frame: np.ndarray, tstart: float) -> np.ndarray:
    """Mission time (s) of the mid-point of 0.1 s frames numbered from TSTART."""
    return tstart + (np.asarray(frame, dtype=np.float64) + 0.5) * FRAME_TIME_S


def _table(
    name: str, spec: Mapping[str, tuple[str, str | None]], data: Mapping[str, np.ndarray]
) -> fits.BinTableHDU:
    columns = [
        fits.Column(name=column, format=tform, unit=unit, array=data[column])
        for column, (tform, unit) in spec.items()
    ]
    hdu = fits.BinTableHDU.from_columns(columns, name=name)
    return hdu


def build_l0(
    primary: Mapping[str, Any],
    events: Mapping[str, np.ndarray],
    hk: Mapping[str, np.ndarray],
    attitude: Mapping[str, np.ndarray],
) -> fits.HDUList:
    """Assemble an L0 HDUList from header values and column arrays.

    Parameters
    ----------
    primary
        Primary keywords (PRIMARY_KEYWORDS); the fixed values and time keywords are added.
    events, hk, attitude
        Column arrays by name, as in EVENTS_COLUMNS, HK_COLUMNS and ATTITUDE_COLUMNS.
    """
    header = fits.Header()
    for key, value in {**FIXED_PRIMARY_VALUES, **TIME_KEYWORDS, **primary}.items():
        if value is not None:
            header[key] = value
    hdus: list[fits.PrimaryHDU | fits.BinTableHDU] = [fits.PrimaryHDU(header=header)]
    for name, data in (("EVENTS", events), ("HK", hk), ("ATTITUDE", attitude)):
        table = _table(name, COLUMNS_BY_HDU[name], data)
        for key in (*EXTENSION_KEYWORDS, *TIME_KEYWORDS):
            table.header[key] = header[key]
        hdus.append(table)
    events_hdu = hdus[1]
    for axis in ("RAWX", "RAWY"):
        n = events_hdu.columns.names.index(axis) + 1
        events_hdu.header[f"TLMIN{n}"] = DETECTOR_TLMIN
        events_hdu.header[f"TLMAX{n}"] = DETECTOR_TLMAX
    return fits.HDUList(hdus)


def read_l0_bytes(data: bytes) -> fits.HDUList:
    """Parse the bytes of an L0 FITS file into an in-memory HDUList.

    Every HDU's data is loaded, so a truncated file fails here, not later.

    Raises
    ------
    Unprocessable
        The bytes are not a complete FITS file; the reason says what is wrong.
    """
    if not data:
        raise Unprocessable("L0 file is empty (0 bytes)")
    if len(data) % 2880:
        raise Unprocessable(
            f"L0 file is truncated or corrupt: {len(data)} bytes is not a multiple of the "
            "2880-byte FITS block"
        )
    if not data.startswith(b"SIMPLE  ="):
        raise Unprocessable("L0 file is not FITS: it does not start with the SIMPLE keyword")
    try:
        hdul = fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False)
        for hdu in hdul:
            _ = hdu.data
            if isinstance(hdu, fits.BinTableHDU) and hdu.data is not None:
                _ = hdu.data.tobytes()
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, VerifyError
        raise Unprocessable(f"L0 file is truncated or corrupt: {exc}") from exc
    return hdul
