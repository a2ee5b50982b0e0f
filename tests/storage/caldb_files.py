"""Small CALDB files made with astropy for the tests."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits


def caldb_file(
    codename: str = "GAIN",
    cvsd: str = "2024-06-22",
    cvst: str = "00:00:00",
    boundaries: tuple[str, ...] = ("TEMP(-70--60)C",),
    drop: str | None = None,
    detector: str | None = "CCD",
    extensions: int = 1,
    value: float = 2.5,
) -> bytes:
    """A FITS file with ``extensions`` calibration tables carrying the CALDB keywords.

    ``drop`` names a keyword to leave out of the last extension.
    """
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SVOM"
    primary.header["INSTRUME"] = "MXT"
    hdus = [primary]
    for number in range(extensions):
        table = fits.BinTableHDU.from_columns(
            [fits.Column(name="GAIN", format="E", array=np.array([value], dtype=np.float32))],
            name=f"{codename}{number}" if extensions > 1 else codename,
        )
        header = table.header
        keywords = {
            "CCLS0001": "BCF",
            "CDTP0001": "DATA",
            "CCNM0001": codename,
            "CVSD0001": cvsd,
            "CVST0001": cvst,
            "CDES0001": f"MXT {codename.lower()} model",
        }
        for index, text in enumerate(boundaries or ("NONE",), start=1):
            keywords[f"CBD{index}0001"] = text
        if detector:
            keywords["DETNAM"] = detector
        for name, value_ in keywords.items():
            if drop == name and number == extensions - 1:
                continue
            header[name] = value_
        hdus.append(table)
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()
