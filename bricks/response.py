"""Spectral responses: the RMF (redistribution) and the ARF (effective area) of a source.

OGIP CAL/GEN/92-002 formats. PI channel ``k`` collects energies ``[10 k, 10 k + 10)`` eV
(0-1023). The RMF is the detector's Gaussian redistribution with the FWHM of the
RESOL calibration, on a 10 eV grid of incident energies from 0.1 to 10.24 keV; each
row is normalised over the 1024 channels (the response's efficiency lives in the
ARF). The ARF is the on-axis effective area times the vignetting at the source's
off-axis angle times the PSF fraction left after background subtraction
(:mod:`bricks.regions`), the ``xrtmkarf`` recipe.
"""

from __future__ import annotations

import functools

import numpy as np
from astropy.io import fits
from scipy.special import ndtr

from bricks.ogip import apply_cards, card, observation_cards
from bricks.tables import column_template, filled_table

N_CHANNELS = 1024
CHANNEL_EV = 10.0
ENERGY_MIN_KEV, ENERGY_MAX_KEV, ENERGY_STEP_KEV = 0.1, 10.24, 0.01
#: Redistribution probabilities below this are dropped from the matrix (LO_THRES).
LO_THRES = 1e-7
#: Width of the channel window evaluated per row, channels (covers > 6 sigma).
WINDOW_CHANNELS = 96

RESPONSE_KEYWORDS = (
    ("HDUCLASS", "OGIP", "format conforms to OGIP standards"),
    ("CHANTYPE", "PI", "channels are PI (10 eV)"),
    ("DETCHANS", N_CHANNELS, "number of channels"),
)


#: The EBOUNDS and SPECRESP columns (CAL/GEN/92-002), defined once.
EBOUNDS_COLUMNS = column_template(
    [("CHANNEL", "J", None), ("E_MIN", "E", "keV"), ("E_MAX", "E", "keV")]
)
SPECRESP_COLUMNS = column_template(
    [("ENERG_LO", "E", "keV"), ("ENERG_HI", "E", "keV"), ("SPECRESP", "E", "cm**2")]
)


def energy_grid() -> tuple[np.ndarray, np.ndarray]:
    """Incident energy bins (ENERG_LO, ENERG_HI), keV."""
    n = round((ENERGY_MAX_KEV - ENERGY_MIN_KEV) / ENERGY_STEP_KEV)
    edges = ENERGY_MIN_KEV + ENERGY_STEP_KEV * np.arange(n + 1)
    return edges[:-1], edges[1:]


def channel_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Nominal energy range of each PI channel (E_MIN, E_MAX), keV."""
    lo = np.arange(N_CHANNELS) * CHANNEL_EV / 1000.0
    return lo, lo + CHANNEL_EV / 1000.0


def redistribution_matrix(resolution: object) -> tuple[np.ndarray, np.ndarray]:
    """Dense Gaussian redistribution: probability of each channel per incident energy.

    Parameters
    ----------
    resolution
        The RESOL calibration (``fwhm_ev(energy_ev)``).

    Returns
    -------
    first_channel, window
        ``first_channel[i]`` is the channel of ``window[i, 0]``; ``window`` has
        ``WINDOW_CHANNELS`` columns, rows normalised to 1 over the channel range.
    """
    lo, hi = energy_grid()
    energy_ev = 500.0 * (lo + hi)  # bin centre, eV
    sigma = np.asarray(resolution.fwhm_ev(energy_ev), dtype=np.float64) / (
        2.0 * np.sqrt(2.0 * np.log(2.0))
    )
    centre = np.floor(energy_ev / CHANNEL_EV).astype(np.int64)
    first = np.clip(centre - WINDOW_CHANNELS // 2, 0, N_CHANNELS - WINDOW_CHANNELS)
    channels = first[:, None] + np.arange(WINDOW_CHANNELS)[None, :]
    upper = ndtr((CHANNEL_EV * (channels + 1) - energy_ev[:, None]) / sigma[:, None])
    lower = ndtr((CHANNEL_EV * channels - energy_ev[:, None]) / sigma[:, None])
    window = upper - lower
    window /= window.sum(axis=1, keepdims=True)
    return first, window


@functools.lru_cache(maxsize=4)  # RESOL objects are frozen: one matrix per calibration
def matrix_rows(resolution: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored RMF rows: first channel, number of channels and values of each row.

    Parameters
    ----------
    resolution
        The RESOL calibration (``fwhm_ev(energy_ev)``).

    Returns
    -------
    f_chan, n_chan, rows
        Per incident energy bin: first channel above ``LO_THRES``, channel count, and
        the float32 probabilities (an object array of read-only arrays).
    """
    first, window = redistribution_matrix(resolution)
    kept = window >= LO_THRES
    first_kept = np.argmax(kept, axis=1)
    last_kept = WINDOW_CHANNELS - 1 - np.argmax(kept[:, ::-1], axis=1)
    values = window.astype(np.float32)  # one cast; each row is a read-only view of it
    values.setflags(write=False)
    rows = np.empty(len(window), dtype=object)
    for i in range(len(window)):  # ~1000 rows of different lengths: no vectorised form
        rows[i] = values[i, first_kept[i] : last_kept[i] + 1]
    f_chan = (first + first_kept).astype(np.int32)
    n_chan = (last_kept - first_kept + 1).astype(np.int32)
    for array in (f_chan, n_chan, rows):
        array.setflags(write=False)
    return f_chan, n_chan, rows


def rmf_hdulist(
    resolution: object,
    source_header: fits.Header,
    creator: str,
    observation: list[fits.Card] | None = None,
) -> fits.HDUList:
    """The RMF: MATRIX (one channel group per row, variable length) and EBOUNDS.

    ``observation`` are ``observation_cards(source_header)`` when the caller has them.
    """
    instrument = _instrument_cards(source_header, observation)
    lo, hi = energy_grid()
    f_chan, n_chan, rows = matrix_rows(resolution)
    matrix_column = fits.Column("MATRIX", "PE()", array=rows)
    matrix = fits.BinTableHDU.from_columns(
        [
            fits.Column("ENERG_LO", "E", unit="keV", array=lo),
            fits.Column("ENERG_HI", "E", unit="keV", array=hi),
            fits.Column("N_GRP", "I", array=np.ones(len(lo), dtype=np.int16)),
            fits.Column("F_CHAN", "J", array=f_chan),
            fits.Column("N_CHAN", "J", array=n_chan),
            matrix_column,
        ],
        name="MATRIX",
    )
    _response_header(matrix.header, instrument, "RESPONSE", "RSP_MATRIX", "REDIST")
    apply_cards(
        matrix.header,
        [
            card("LO_THRES", LO_THRES, "lower threshold of stored matrix elements"),
            card("TLMIN4", 0, "first channel"),
            card("TLMAX4", N_CHANNELS - 1, "last channel"),
        ],
        shared=False,
    )
    c_lo, c_hi = channel_bounds()
    ebounds = filled_table(
        EBOUNDS_COLUMNS,
        {"CHANNEL": np.arange(N_CHANNELS, dtype=np.int32), "E_MIN": c_lo, "E_MAX": c_hi},
        N_CHANNELS,
        "EBOUNDS",
    )
    _response_header(ebounds.header, instrument, "RESPONSE", "EBOUNDS", None)
    apply_cards(
        ebounds.header,
        [card("TLMIN1", 0, "first channel"), card("TLMAX1", N_CHANNELS - 1, "last channel")],
        shared=False,
    )
    return fits.HDUList([_response_primary(instrument, creator), matrix, ebounds])


def arf_hdulist(
    area: object,
    vignetting: float,
    psf_fraction: float,
    source_header: fits.Header,
    creator: str,
    observation: list[fits.Card] | None = None,
) -> fits.HDUList:
    """The ARF: SPECRESP = area(E) x vignetting x PSF fraction, cm^2.

    Parameters
    ----------
    area
        The SPECRESP calibration (``area(energy_kev) -> cm^2``).
    vignetting
        Vignetting factor at the source's off-axis angle.
    psf_fraction
        Effective PSF fraction of the source region.
    source_header
        Header the observation keywords come from.
    creator
        Brick and version.
    observation
        ``observation_cards(source_header)`` when the caller has them already.
    """
    instrument = _instrument_cards(source_header, observation)
    lo, hi = energy_grid()
    specresp = np.asarray(area(0.5 * (lo + hi)), dtype=np.float64) * vignetting * psf_fraction
    values = {"ENERG_LO": lo, "ENERG_HI": hi, "SPECRESP": specresp}
    hdu = filled_table(SPECRESP_COLUMNS, values, lo.size, "SPECRESP")
    _response_header(hdu.header, instrument, "RESPONSE", "SPECRESP", None)
    apply_cards(
        hdu.header,
        [
            card("VIGNET", vignetting, "vignetting applied"),
            card("PSFFRAC", psf_fraction, "PSF fraction applied (after bkg subtraction)"),
        ],
        shared=False,
    )
    return fits.HDUList([_response_primary(instrument, creator), hdu])


def _response_primary(instrument: list[fits.Card], creator: str) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU()
    apply_cards(hdu.header, instrument)
    apply_cards(
        hdu.header,
        [card("CREATOR", creator, "brick and version that wrote the file")],
        shared=False,
    )
    return hdu


def _instrument_cards(
    source_header: fits.Header, observation: list[fits.Card] | None = None
) -> list[fits.Card]:
    if observation is None:
        observation = observation_cards(source_header)
    return [
        c
        for c in observation
        if c.keyword in ("TELESCOP", "INSTRUME", "FILTER", "OBS_ID", "OBJECT")
    ]


def _response_header(
    header: fits.Header,
    instrument: list[fits.Card],
    clas1: str,
    clas2: str,
    clas3: str | None,
) -> None:
    apply_cards(header, instrument)
    cards = [card(key, value, comment) for key, value, comment in RESPONSE_KEYWORDS]
    cards += [card("HDUCLAS1", clas1, ""), card("HDUCLAS2", clas2, "")]
    if clas3:
        cards.append(card("HDUCLAS3", clas3, ""))
    cards.append(card("HDUVERS", "1.3.0", "CAL/GEN/92-002 version"))
    apply_cards(header, cards, shared=False)
