"""OGIP header conventions shared by the L3 products (light curve, spectra, responses)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from astropy.io import fits

from bricks.tables import column_template, filled_table

#: Observation keywords carried from the L2 EVENTS header to every L3 product.
OBSERVATION_KEYWORDS = (
    "TELESCOP",
    "INSTRUME",
    "OBS_ID",
    "OBJECT",
    "PROGRAM",
    "RA_OBJ",
    "DEC_OBJ",
    "RA_PNT",
    "DEC_PNT",
    "PA_PNT",
    "TRIGTIME",
    "BURST_ID",
    "DATE-OBS",
    "DATE-END",
    "TSTART",
    "TSTOP",
    "TIMESYS",
    "MJDREFI",
    "MJDREFF",
    "TIMEUNIT",
    "TIMEREF",
    "TASSIGN",
    "CLOCKAPP",
)

MISSION_DEFAULTS = {
    "TELESCOP": ("SVOM", "mission"),
    "INSTRUME": ("MXT", "instrument"),
    "FILTER": ("NONE", "MXT has no filter wheel"),
    "TIMESYS": ("TT", "time system"),
    "MJDREFI": (57754, "MJD reference day (2017-01-01)"),
    "MJDREFF": (0.0, "MJD reference fraction"),
    "TIMEUNIT": ("s", "unit of time keywords"),
}


@functools.lru_cache(maxsize=4096)
def _card_image(keyword: str, value: Any, comment: str, kind: tuple[type, str]) -> str:
    return fits.Card(keyword, value, comment).image


def card(keyword: str, value: Any, comment: str = "") -> fits.Card:
    """A new card ``keyword = value / comment``, as ``fits.Card(keyword, value, comment)``.

    Its 80-character image is rendered once per process for each distinct card (the
    image cache is keyed on the value's type and repr too, so ``True``, ``1``, ``1.0``
    and ``-0.0`` stay distinct); the card returned is parsed from that image only when
    read. astropy spends ~12 µs on every ``Card(...)``, ~0.5 µs on this.

    The value read back is the one the file will hold: a float is rounded to the
    20-character FITS field (``1.2345678901234567e-06`` reads ``1.23456789012345e-06``)
    and an over-long comment is truncated (with astropy's VerifyWarning, once per
    process), in memory as after a write and read. Bricks chained in process therefore
    see the values a function chain, which passes files, sees.
    """
    try:
        image = _card_image(keyword, value, comment, (type(value), repr(value)))
    except TypeError:  # an unhashable value: no cache
        return fits.Card(keyword, value, comment)
    if len(image) != 80:  # a long string continued on CONTINUE cards: built as usual
        return fits.Card(keyword, value, comment)
    return fits.Card.fromstring(image)


def observation_cards(header: fits.Header, skip: Iterable[str] = ()) -> list[fits.Card]:
    """Observation keywords of ``header`` (with mission defaults where absent).

    Parameters
    ----------
    header
        Usually the L2 ``EVENTS`` header.
    skip
        Keywords not to return (set by the caller itself).
    """
    skipped = set(skip)
    cards: list[fits.Card] = []
    for key, (value, comment) in MISSION_DEFAULTS.items():
        if key not in skipped and key not in header:
            cards.append(card(key, value, comment))
    for key in OBSERVATION_KEYWORDS:
        if key in header and key not in skipped:
            cards.append(card(key, header[key], header.comments[key]))
    return cards


def apply_cards(header: fits.Header, cards: Iterable[fits.Card], shared: bool = True) -> None:
    """Set each card on ``header`` (a header the caller is building, never an input).

    A keyword new to ``header`` gets the card appended (where setting it would put
    it): a copy when ``shared`` (the cards are applied to other headers too), else the
    card itself. An existing keyword is set.
    """
    for item in cards:
        keyword = item.keyword
        if keyword in header:
            header[keyword] = (item.value, item.comment)
        else:
            header.append(fits.Card.fromstring(item.image) if shared else item)


def gti_hdu(
    intervals: np.ndarray,
    source_header: fits.Header,
    cards: Sequence[fits.Card] | None = None,
) -> fits.BinTableHDU:
    """An OGIP GTI extension for ``intervals`` (``(n, 2)``, mission seconds).

    ``cards`` are ``observation_cards(source_header)`` when the caller has them already.
    """
    hdu = filled_table(
        GTI_COLUMNS, {"START": intervals[:, 0], "STOP": intervals[:, 1]}, len(intervals), "GTI"
    )
    apply_cards(hdu.header, observation_cards(source_header) if cards is None else cards)
    apply_cards(hdu.header, _GTI_CARDS)
    return hdu


#: The GTI columns, defined once.
GTI_COLUMNS = column_template([("START", "D", "s"), ("STOP", "D", "s")])
_GTI_CARDS = (
    card("HDUCLASS", "OGIP", "format conforms to OGIP standards"),
    card("HDUCLAS1", "GTI", "good time intervals"),
    card("HDUCLAS2", "STANDARD", ""),
)


def primary_hdu(
    source_header: fits.Header, creator: str, cards: Sequence[fits.Card] | None = None
) -> fits.PrimaryHDU:
    """An empty primary HDU with the observation keywords and the creating brick.

    ``cards`` are ``observation_cards(source_header)`` when the caller has them already.
    """
    hdu = fits.PrimaryHDU()
    apply_cards(hdu.header, observation_cards(source_header) if cards is None else cards)
    apply_cards(
        hdu.header,
        [card("CREATOR", creator, "brick and version that wrote the file")],
        shared=False,
    )
    return hdu
