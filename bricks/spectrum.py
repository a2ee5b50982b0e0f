"""Spectrum brick: source and background PHA spectra with their ARF and RMF.

OGIP/92-007 type I spectra (CHANNEL, COUNTS over 1024 PI channels of 10 eV) from the
regions of :mod:`bricks.regions`. BACKSCAL is each region's live area as a fraction of
the 256 x 256 pixel detector, so XSPEC's background scaling is the area ratio; the ARF
carries the PSF fraction that survives this subtraction, so a model fitted to the net
spectrum is the whole source flux. The files name each other (BACKFILE, RESPFILE,
ANCRFILE) by their product file names, so XSPEC and Sherpa find them when the products
sit in one directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits
from pydantic import Field

from bricks.base import Brick
from bricks.errors import BadInput
from bricks.ogip import apply_cards, card, gti_hdu, observation_cards, primary_hdu
from bricks.products import ARF, BKG_PHA, L2_EVENTS, POSITION, RMF, SRC_PHA
from bricks.regions import (
    ExtractionRegions,
    RegionConfig,
    build_regions,
    events_table,
    extraction_status,
    good_time_intervals,
    live_exposure,
    require_columns,
)
from bricks.response import N_CHANNELS, arf_hdulist, rmf_hdulist
from bricks.tables import column_template, filled_table

VERSION = "1.0.0"
DETECTOR_AREA_PIX = 256.0 * 256.0


class SpectrumConfig(RegionConfig):
    """Spectrum parameters.

    Parameters
    ----------
    good_pi_min, good_pi_max
        PI channels outside this range get QUALITY 5 (bad): the screened band.
    """

    good_pi_min: int = Field(20, ge=0, le=1023)
    good_pi_max: int = Field(1000, ge=0, le=1023)


#: The SPECTRUM columns (OGIP/92-007 type I), defined once.
SPECTRUM_COLUMNS = column_template(
    [("CHANNEL", "J", None), ("COUNTS", "J", "count"), ("QUALITY", "I", None)]
    + [("GROUPING", "I", None)]
)


def pi_histogram(pi: np.ndarray) -> np.ndarray:
    """Counts per PI channel (0-1023); channels outside are an error."""
    if pi.size and (pi.min() < 0 or pi.max() >= N_CHANNELS):
        raise BadInput(f"EVENTS PI outside 0-{N_CHANNELS - 1}: {pi.min()}..{pi.max()}")
    return np.bincount(pi.astype(np.int64), minlength=N_CHANNELS)


def pha_hdulist(
    counts: np.ndarray,
    kind: str,
    header: fits.Header,
    exposure: float,
    backscal: float,
    regions: ExtractionRegions | None,
    config: SpectrumConfig,
    status: str,
    observation: list[fits.Card] | None = None,
) -> fits.HDUList:
    """A type I PHA file: primary, SPECTRUM and GTI-less (the GTI goes in the source file).

    Parameters
    ----------
    counts
        Counts per channel.
    kind
        ``"TOTAL"`` (source) or ``"BKG"``.
    header
        The L2 EVENTS header.
    exposure
        Live good time, s.
    backscal
        Region area over the detector area.
    regions
        The regions, for their keywords (None when nothing was extracted).
    config
        Spectrum parameters.
    status
        ``ok``, ``no_detection`` or ``no_events``.
    observation
        ``observation_cards(header)`` when the caller has them already.
    """
    channel = np.arange(N_CHANNELS, dtype=np.int32)
    quality = np.where(
        (channel >= config.good_pi_min) & (channel <= config.good_pi_max), 0, 5
    ).astype(np.int16)
    hdu = filled_table(
        SPECTRUM_COLUMNS,
        {
            "CHANNEL": channel,
            "COUNTS": counts.astype(np.int32),
            "QUALITY": quality,
            "GROUPING": np.ones(N_CHANNELS, dtype=np.int16),
        },
        N_CHANNELS,
        "SPECTRUM",
    )
    h = hdu.header
    if observation is None:
        observation = observation_cards(header)
    apply_cards(h, observation)
    keywords = (
        ("HDUCLASS", "OGIP", "format conforms to OGIP standards"),
        ("HDUCLAS1", "SPECTRUM", "PHA dataset"),
        ("HDUCLAS2", kind, "TOTAL: source region; BKG: background region"),
        ("HDUCLAS3", "COUNT", "COUNTS column, not rates"),
        ("HDUCLAS4", "TYPEI", "one spectrum per file"),
        ("HDUVERS", "1.2.1", "OGIP/92-007 version"),
        ("CHANTYPE", "PI", "channels are PI (10 eV)"),
        ("DETCHANS", N_CHANNELS, "number of channels"),
        ("TLMIN1", 0, "first channel"),
        ("TLMAX1", N_CHANNELS - 1, "last channel"),
        ("EXPOSURE", exposure, "[s] live good time"),
        ("AREASCAL", 1.0, "area scaling"),
        ("BACKSCAL", backscal, "region live area / detector area"),
        ("CORRSCAL", 0.0, "no correction file"),
        ("CORRFILE", "NONE", ""),
        ("BACKFILE", BKG_PHA.filename if kind == "TOTAL" else "NONE", "background file"),
        ("RESPFILE", RMF.filename, "redistribution matrix"),
        ("ANCRFILE", ARF.filename, "ancillary response"),
        ("POISSERR", True, "Poisson errors apply"),
        ("SYS_ERR", 0.0, "no systematic error"),
        ("SPECSTAT", status, "ok, no_detection or no_events"),
    )
    apply_cards(h, [card(key, value, comment) for key, value, comment in keywords], shared=False)
    if regions is not None:
        apply_cards(h, [card(k, *v) for k, v in regions.keywords().items()], shared=False)
    return fits.HDUList([primary_hdu(header, f"mxt spectrum {VERSION}", observation), hdu])


def build_spectra(
    l2_events: fits.HDUList,
    position: Mapping[str, Any],
    calibration: Mapping[str, Any],
    config: SpectrumConfig,
) -> dict[str, fits.HDUList]:
    """Source and background PHA, ARF and RMF (see the module docstring)."""
    if config.good_pi_max < config.good_pi_min:
        raise BadInput(
            f"good_pi_max ({config.good_pi_max}) is below good_pi_min ({config.good_pi_min})"
        )
    events = events_table(l2_events)
    header = events.header
    intervals = good_time_intervals(l2_events)
    exposure = live_exposure(intervals, header)
    creator = f"mxt spectrum {VERSION}"
    status = extraction_status(position, events, intervals)
    regions = None
    src = bkg = np.zeros(N_CHANNELS, dtype=np.int64)
    vignetting, psf_fraction = 1.0, 1.0
    if status == "ok":
        require_columns(events, ("X", "Y", "PI"))
        regions = build_regions(header, position, calibration, config)
        in_src, in_bkg = regions.masks(events.data["X"], events.data["Y"])
        pi = events.data["PI"]
        src, bkg = pi_histogram(pi[in_src]), pi_histogram(pi[in_bkg])
        vignetting = float(calibration["VIGNET"](np.float64(regions.offaxis_arcmin)))
        psf_fraction = regions.psf_frac_effective
    src_scal = regions.src_area_pix / DETECTOR_AREA_PIX if regions else 1.0
    bkg_scal = regions.bkg_area_pix / DETECTOR_AREA_PIX if regions else 1.0
    observation = observation_cards(header)  # made once, copied into each HDU
    args = (header, exposure, src_scal, regions, config, status, observation)
    src_pha = pha_hdulist(src, "TOTAL", *args)
    src_pha.append(gti_hdu(intervals, header, observation))
    bkg_args = (header, exposure, bkg_scal, regions, config, status, observation)
    return {
        SRC_PHA.name: src_pha,
        BKG_PHA.name: pha_hdulist(bkg, "BKG", *bkg_args),
        ARF.name: arf_hdulist(
            calibration["SPECRESP"], vignetting, psf_fraction, header, creator, observation
        ),
        RMF.name: rmf_hdulist(calibration["RESOL"], header, creator, observation),
    }


def _run(
    inputs: Mapping[str, Any], calibration: Mapping[str, Any], config: SpectrumConfig
) -> dict[str, Any]:
    return build_spectra(inputs["l2_events"], inputs["position"], calibration, config)


BRICK = Brick(
    name="spectrum",
    version=VERSION,
    inputs=(
        L2_EVENTS,
        POSITION,
    ),
    outputs=(SRC_PHA, BKG_PHA, ARF, RMF),
    caldb=("PSF", "SPECRESP", "VIGNET", "RESOL", "TELDEF", "BADPIX"),
    config=SpectrumConfig,
    run=_run,
)
