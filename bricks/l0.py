"""The L0 raw observation file (L0_FORMAT.md): its definition, a writer and a byte reader.

The column and keyword tables here are the single source of truth for the simulator
(which writes L0 files), the ingest brick (which validates them) and docs/formats.md.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

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
    from bricks.pipeline import check_fits_layout  # pipeline's codec imports this module

    try:
        # astropy itself spins for ever on some hostile size cards (PCOUNT < 0)
        check_fits_layout("L0 file", data)
    except Unprocessable as exc:
        raise Unprocessable(f"L0 file is truncated or corrupt: {exc.reason}") from None
    try:
        with warnings.catch_warnings():
            # astropy only warns about a short file; here that is an error
            warnings.simplefilter("error", AstropyUserWarning)
            hdul = fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, VerifyError
        raise Unprocessable(f"L0 file is truncated or corrupt: {exc}") from exc
    return hdul


# --------------------------------------------------------------------------- validation


def _fail(reason: str, **where: Any) -> Unprocessable:
    return Unprocessable(f"L0 {reason}", **where)


def _check_primary(header: fits.Header) -> None:
    for key, (kind, required) in PRIMARY_KEYWORDS.items():
        if key not in header:
            if required:
                raise _fail(f"primary header lacks keyword {key}", hdu="PRIMARY", keyword=key)
            continue
        value = header[key]
        numeric = kind in (int, float)
        if (numeric and (isinstance(value, bool) or not isinstance(value, int | float))) or (
            kind is str and not isinstance(value, str)
        ):
            raise _fail(
                f"primary keyword {key}={value!r} should be a {kind.__name__}",
                hdu="PRIMARY",
                keyword=key,
            )
        if kind is int and not isinstance(value, int):
            raise _fail(f"primary keyword {key}={value!r} should be an integer", keyword=key)
        if numeric and not np.isfinite(value):
            raise _fail(f"primary keyword {key} is not finite", hdu="PRIMARY", keyword=key)
    for key, expected in FIXED_PRIMARY_VALUES.items():
        if header[key] != expected:
            raise _fail(
                f"primary keyword {key}={header[key]!r}, expected {expected!r}",
                hdu="PRIMARY",
                keyword=key,
            )
    if header["PROGRAM"] not in PROGRAMMES:
        raise _fail(
            f"primary keyword PROGRAM={header['PROGRAM']!r} is not one of {list(PROGRAMMES)}",
            hdu="PRIMARY",
            keyword="PROGRAM",
        )
    if not OBS_ID_PATTERN.match(header["OBS_ID"]):
        raise _fail(
            f"primary keyword OBS_ID={header['OBS_ID']!r} must be 1-32 characters of [A-Za-z0-9_-]",
            hdu="PRIMARY",
            keyword="OBS_ID",
        )
    for key in ("RA_OBJ", "RA_PNT"):
        if not 0.0 <= header[key] < 360.0:
            raise _fail(f"primary keyword {key}={header[key]} is outside [0, 360)", keyword=key)
    for key in ("DEC_OBJ", "DEC_PNT"):
        if not -90.0 <= header[key] <= 90.0:
            raise _fail(f"primary keyword {key}={header[key]} is outside [-90, 90]", keyword=key)
    if header["TSTOP"] <= header["TSTART"]:
        raise _fail(
            f"primary TSTOP={header['TSTOP']} is not after TSTART={header['TSTART']}",
            keyword="TSTOP",
        )


def _check_columns(hdu: fits.BinTableHDU, spec: Mapping[str, tuple[str, str | None]]) -> None:
    names = [n.upper() for n in hdu.columns.names]
    for column, (tform, unit) in spec.items():
        if column not in names:
            raise _fail(f"{hdu.name} lacks column {column}", hdu=hdu.name, column=column)
        found = hdu.columns[names.index(column)]
        if normalise_tform(found.format) != tform:
            raise _fail(
                f"{hdu.name} column {column} has format {found.format}, expected {tform}",
                hdu=hdu.name,
                column=column,
            )
        if unit is not None and (found.unit or "").strip().lower() != unit.lower():
            raise _fail(
                f"{hdu.name} column {column} has unit {found.unit!r}, expected {unit!r}",
                hdu=hdu.name,
                column=column,
            )
        if tform[-1] in "DE":
            values = hdu.data[column]
            bad = np.count_nonzero(~np.isfinite(values))
            if bad:
                raise _fail(
                    f"{hdu.name} column {column} has {bad} NaN or infinite value(s)",
                    hdu=hdu.name,
                    column=column,
                )


def _check_sorted(hdu: fits.BinTableHDU, strict: bool) -> None:
    step = np.diff(hdu.data["TIME"])
    wrong = np.flatnonzero(step <= 0 if strict else step < 0)
    if wrong.size:
        order = "strictly increasing" if strict else "sorted"
        raise _fail(
            f"{hdu.name} column TIME is not {order} (first at row {wrong[0] + 2})",
            hdu=hdu.name,
            column="TIME",
        )


def _check_events(hdu: fits.BinTableHDU, tstart: float, tstop: float) -> None:
    data = hdu.data
    for axis in ("RAWX", "RAWY"):
        values = data[axis]
        outside = np.count_nonzero((values < DETECTOR_TLMIN) | (values > DETECTOR_TLMAX))
        if outside:
            raise _fail(
                f"EVENTS column {axis} has {outside} event(s) outside the detector "
                f"({DETECTOR_TLMIN}-{DETECTOR_TLMAX})",
                hdu="EVENTS",
                column=axis,
            )
    time = data["TIME"]
    early = np.count_nonzero((time < tstart) | (time > tstop))
    if early:
        raise _fail(f"EVENTS column TIME has {early} event(s) outside TSTART-TSTOP", column="TIME")
    frame = data["FRAME"]
    if np.count_nonzero(frame < 0):
        raise _fail("EVENTS column FRAME has negative frame numbers", column="FRAME")
    mismatch = np.count_nonzero(np.abs(time - frame_times(frame, tstart)) > 1e-3)
    if mismatch:
        raise _fail(
            f"EVENTS column TIME disagrees with TSTART + (FRAME + 0.5) x 0.1 s for {mismatch} "
            "event(s)",
            column="TIME",
        )
    _check_sorted(hdu, strict=False)


def validate_l0(hdul: fits.HDUList) -> None:
    """Check an L0 HDUList against the interface (L0_FORMAT.md).

    Structure, keywords, column formats and units, NaNs, ranges and ordering. Events on
    the outermost detector rows and columns (0 and 255) are accepted here and flagged
    later (STATUS 8); events outside the detector (< 0 or > 255) are rejected.

    Raises
    ------
    Unprocessable
        Naming the HDU and the keyword or column at fault.
    """
    if len(hdul) < 4:
        present = [h.name for h in hdul]
        missing = [n for n in HDU_NAMES if n not in present]
        raise _fail(f"file lacks extension(s) {missing}; found {present}", hdu=missing[0])
    for index, name in enumerate(HDU_NAMES, start=1):
        hdu = hdul[index]
        if hdu.name != name:
            raise _fail(
                f"extension {index} is {hdu.name!r}, expected {name!r} "
                f"(order: {', '.join(HDU_NAMES)})",
                hdu=name,
            )
        if not isinstance(hdu, fits.BinTableHDU):
            raise _fail(f"extension {name} is not a binary table", hdu=name)
    _check_primary(hdul[0].header)
    for name in HDU_NAMES:
        _check_columns(hdul[name], COLUMNS_BY_HDU[name])
    for name in ("HK", "ATTITUDE"):
        if len(hdul[name].data) == 0:
            raise _fail(f"{name} table has no rows", hdu=name)
        _check_sorted(hdul[name], strict=True)
    header = hdul[0].header
    _check_events(hdul["EVENTS"], header["TSTART"], header["TSTOP"])
