"""Detect: counts image, PSF-matched source list, maximum-likelihood position, region.

Steps (the Swift-XRT ``xrtcentroid`` / published XRT position methods, with MXT's
lobster-eye PSF):

1. counts image on the sky grid (``np.bincount``);
2. PSF-matched detection against a local background (:mod:`bricks.detect_search`), on
   the image binned ``search_binning`` × ``search_binning``;
3. for the brightest source, or the one nearest the target when asked, a
   maximum-likelihood fit of the position on the unbinned events with the PSF turned
   to the sky by the roll and a flat background (:mod:`bricks.detect_fit`), in an
   aperture centred again on the fit when it lands away from the search's peak; the
   90 % statistical radius comes from the likelihood curvature, the total adds the 25″
   systematic in quadrature;
4. a DS9 region (:mod:`bricks.detect_region`).

An observation without events or without a significant source yields an empty source
list and a position whose ``status`` is ``"no_detection"``, never an error.

The exposure is evaluated only where detect needs it (:class:`bricks.exposure.
ObservationExposure`): for the search's footprint, 2 × 2 samples per binned pixel
(every sky pixel when ``search_binning`` is odd), and the
fit's aperture grid pixel by pixel, relative to the on-axis exposure.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import Field

from bricks.base import Brick, BrickConfig
from bricks.calibration import Psf
from bricks.detect_fit import PositionFit, RelativeExposure, fit_position, make_aperture
from bricks.detect_frame import (
    events_hdu,
    image_wcs_header,
    mean_roll_deg,
    product_header,
)
from bricks.detect_region import ds9_region
from bricks.detect_search import (
    Candidate,
    bin_image,
    counts_image,
    find_sources,
    psf_kernel,
    unbinned,
)
from bricks.errors import BadInput
from bricks.exposure import ExposureConfig, ObservationExposure, observation_exposure
from bricks.products import IMAGE, L2_EVENTS, POSITION, REGION, SOURCES
from bricks.timeutil import iso_from_mission
from bricks.wcs import SKY_NPIX, event_wcs_keywords

VERSION = "1.0.0"
METHOD = "psf_ml_cash"
RECENTRE_ARCMIN = 0.5
"""A fit this far (arcmin) from its aperture's centre is repeated in an aperture centred on it."""
RECENTRE_PASSES = 1
"""How many times the aperture may be centred again on the fit."""


class DetectConfig(BrickConfig):
    """Parameters of the detect brick.

    Parameters
    ----------
    threshold_sigma
        Detection threshold of the PSF-matched significance, σ.
    background_block_arcmin
        Side of the background mesh blocks, arcmin.
    background_window_blocks
        Side, in blocks, of the window whose clipped mean is a block's background.
    kernel_radius_arcmin
        Half-side of the PSF kernel, arcmin (the diffuse halo reaches 30′).
    fit_radius_arcmin
        Radius of the aperture of the position fit, arcmin.
    fit_grid_arcmin
        Step of the grid integrating the model over the aperture, arcmin.
    systematic_arcsec
        90 % systematic error added in quadrature, arcsec.
    select
        ``"brightest"`` source, or ``"nearest_target"`` (RA_OBJ/DEC_OBJ, or the
        ``target_ra_deg``/``target_dec_deg`` given here).
    target_ra_deg, target_dec_deg
        Target position overriding the header's, degrees.
    max_sources
        Longest source list.
    confusion_fraction
        Fraction of a brighter source's signal counted as noise for its neighbours.
    search_binning
        Side, in sky pixels, of the pixels the source search bins the image into (the
        PSF core is 3.4′ σ, a sky pixel 13.45″); the position fit uses the unbinned
        events.
    """

    threshold_sigma: float = Field(5.0, gt=0.0)
    background_block_arcmin: float = Field(3.6, gt=0.5, le=30.0)
    background_window_blocks: int = Field(7, ge=3, le=31)
    kernel_radius_arcmin: float = Field(30.0, gt=2.0, le=60.0)
    fit_radius_arcmin: float = Field(10.0, gt=1.0, le=30.0)
    fit_grid_arcmin: float = Field(0.5, gt=0.01, le=2.0)
    systematic_arcsec: float = Field(25.0, ge=0.0)
    select: Literal["brightest", "nearest_target"] = "brightest"
    target_ra_deg: float | None = Field(None, ge=0.0, lt=360.0)
    target_dec_deg: float | None = Field(None, ge=-90.0, le=90.0)
    max_sources: int = Field(20, ge=1, le=1000)
    confusion_fraction: float = Field(0.1, ge=0.0, le=1.0)
    search_binning: int = Field(4, ge=1, le=8)


def _calibration(calibration: dict, codename: str) -> Any:
    try:
        return calibration[codename]
    except KeyError:
        raise BadInput(f"calibration {codename} is missing") from None


def _event_positions(events: fits.BinTableHDU) -> tuple[np.ndarray, np.ndarray]:
    """Sky X/Y of the events as float64; :class:`BadInput` on non-finite values."""
    data = events.data
    if data is None or len(data) == 0:
        return np.zeros(0), np.zeros(0)
    x = np.asarray(data["X"], dtype=np.float64)
    y = np.asarray(data["Y"], dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        bad = ~(np.isfinite(x) & np.isfinite(y))
        raise BadInput(f"l2_events EVENTS X/Y hold {int(bad.sum())} non-finite value(s)")
    return x, y


def _select(
    sources: list[Candidate], wcs: WCS, header: fits.Header, config: DetectConfig
) -> Candidate:
    """The source to localise: the most significant, or the nearest to the target."""
    if config.select == "brightest":
        return sources[0]
    ra = config.target_ra_deg if config.target_ra_deg is not None else header.get("RA_OBJ")
    dec = config.target_dec_deg if config.target_dec_deg is not None else header.get("DEC_OBJ")
    if ra is None or dec is None:
        raise BadInput("select='nearest_target' needs RA_OBJ/DEC_OBJ or target_ra_deg/_dec_deg")
    tx, ty = wcs.all_world2pix([[float(ra), float(dec)]], 1)[0]
    return min(sources, key=lambda s: (s.x - tx) ** 2 + (s.y - ty) ** 2)


def _total_error(stat_arcsec: float, systematic_arcsec: float) -> float:
    return float(np.hypot(stat_arcsec, systematic_arcsec))


def _observation_summary(header: fits.Header, roll: float, exposure_s: float) -> dict:
    """Observation facts the position product carries for the notice."""
    summary: dict[str, Any] = {
        "obs_id": str(header.get("OBS_ID", "unknown")),
        "object": str(header.get("OBJECT", "")),
        "burst_id": header.get("BURST_ID"),
        "ra_pointing": float(header["RA_PNT"]),
        "dec_pointing": float(header["DEC_PNT"]),
        "roll": float(roll) % 360.0,
        "exposure": float(exposure_s),
        "tstart": header.get("TSTART"),
        "tstop": header.get("TSTOP"),
        "trigger_time": header.get("TRIGTIME"),
        "trigger_time_tt_iso": None,
        "ra_target": header.get("RA_OBJ"),
        "dec_target": header.get("DEC_OBJ"),
    }
    if summary["trigger_time"] is not None:
        summary["trigger_time_tt_iso"] = iso_from_mission(float(summary["trigger_time"]))
    for key in ("tstart", "tstop", "trigger_time", "ra_target", "dec_target"):
        if summary[key] is not None:
            summary[key] = float(summary[key])
    return summary


def _position_dict(
    fit: PositionFit,
    chosen: Candidate,
    n_sources: int,
    wcs: WCS,
    summary: dict,
    config: DetectConfig,
) -> dict[str, Any]:
    ra, dec = wcs.all_pix2world([[fit.x, fit.y]], 1)[0]
    exposure = summary["exposure"]
    return {
        "status": "detected",
        "method": METHOD,
        "ra": float(ra) % 360.0,
        "dec": float(dec),
        "x": fit.x,
        "y": fit.y,
        "err90_stat_arcsec": fit.err90_stat_arcsec,
        "err90_sys_arcsec": config.systematic_arcsec,
        "err90_arcsec": _total_error(fit.err90_stat_arcsec, config.systematic_arcsec),
        "counts": fit.counts,
        "rate": fit.counts / exposure if exposure > 0 else None,
        "snr": chosen.significance,
        "ts": fit.ts,
        "background_per_arcmin2": fit.background_per_arcmin2,
        "background_rate": fit.background_per_arcmin2 / exposure if exposure > 0 else None,
        "n_events_fit": fit.n_events,
        "fit_radius_arcmin": config.fit_radius_arcmin,
        "converged": fit.converged,
        "n_sources": n_sources,
        **summary,
    }


def _no_detection(reason: str, n_sources: int, summary: dict) -> dict[str, Any]:
    return {
        "status": "no_detection",
        "reason": reason,
        "method": METHOD,
        "ra": None,
        "dec": None,
        "x": None,
        "y": None,
        "err90_stat_arcsec": None,
        "err90_arcsec": None,
        "counts": 0.0,
        "snr": 0.0,
        "n_sources": n_sources,
        **summary,
    }


def _why_nothing(n_events: int, exposure_s: float) -> str:
    """Why an observation gave no position."""
    if n_events == 0:
        return "the observation holds no events"
    if exposure_s <= 0:
        return "the observation has no good time"
    return "no source above the threshold"


def _image_hdulist(image: np.ndarray, wcs: WCS, product: fits.Header) -> fits.HDUList:
    """The IMAGE product; ``product`` is the SRCLIST product header, reclassified here."""
    cards: dict[str, fits.Card] = {}
    for card in product.cards:
        if card.keyword == "HDUCLAS1":
            cards["HDUCLAS1"] = fits.Card("HDUCLAS1", "IMAGE")
            cards["HDUCLAS2"] = fits.Card("HDUCLAS2", "TOTAL")
        elif card.keyword != "HDUCLAS2":
            cards[card.keyword] = copy.copy(card)
    # one header from one card list: astropy's per-keyword updates cost ~30 µs each
    cards.update((card.keyword, card) for card in image_wcs_header(wcs).cards)
    cards["BUNIT"] = fits.Card("BUNIT", "count", "events per sky pixel")
    cards["EXTNAME"] = fits.Card("EXTNAME", "IMAGE")
    hdu = fits.PrimaryHDU(data=image, header=fits.Header(list(cards.values())))
    return fits.HDUList([hdu])


def _counts_error(counts: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """1σ error of matched-filter counts: the background noise (counts / SNR) ⊕ Poisson."""
    background_part = np.divide(counts, snr, out=np.zeros_like(counts), where=snr > 0)
    return np.hypot(background_part, np.sqrt(np.clip(counts, 0.0, None)))


_SRCLIST_COLUMNS = fits.ColDefs(
    [
        fits.Column(name, "D", unit=unit)
        for name, unit in (
            ("X", "pixel"),
            ("Y", "pixel"),
            ("RA", "deg"),
            ("DEC", "deg"),
            ("COUNTS", "count"),
            ("COUNTS_ERR", "count"),
            ("RATE", "count/s"),
            ("SNR", None),
            ("BKG", "count/pixel"),
        )
    ]
)
"""The SRCLIST columns, made once: astropy's Column checks cost ~0.1 ms each per call."""


def _sources_hdulist(
    sources: list[Candidate],
    wcs: WCS,
    header: fits.Header,
    exposure_s: float,
    srclist: fits.Header,
) -> fits.HDUList:
    """The SRCLIST product; ``srclist`` is its product header (:func:`product_header`)."""
    x = np.array([s.x for s in sources], dtype=np.float64)
    y = np.array([s.y for s in sources], dtype=np.float64)
    if len(sources):
        radec = wcs.all_pix2world(np.column_stack([x, y]), 1)
        ra, dec = radec[:, 0] % 360.0, radec[:, 1]
    else:
        ra = dec = np.zeros(0)
    counts = np.array([s.counts for s in sources], dtype=np.float64)
    snr = np.array([s.significance for s in sources], dtype=np.float64)
    rate = counts / exposure_s if exposure_s > 0 else np.zeros_like(counts)
    columns = {
        "X": x,
        "Y": y,
        "RA": ra,
        "DEC": dec,
        "COUNTS": counts,
        "COUNTS_ERR": _counts_error(counts, snr),
        "RATE": rate,
        "SNR": snr,
        "BKG": np.array([s.background for s in sources], dtype=np.float64),
    }
    table = fits.BinTableHDU.from_columns(_SRCLIST_COLUMNS, nrows=len(sources), name="SRCLIST")
    for name, values in columns.items():
        table.data[name][:] = values
    cards = [
        card for card in srclist.copy().cards if card.keyword not in ("COMMENT", "HISTORY", "")
    ]
    cards.append(fits.Card("NSOURCES", len(sources), "sources above the threshold"))
    # X/Y carry the sky WCS like the event file's, so ds9 and fv place the sources.
    wcs_keywords = event_wcs_keywords(header["RA_PNT"], header["DEC_PNT"], 1, 2)
    cards.extend(fits.Card(key, value) for key, value in wcs_keywords.items())
    table.header.extend(cards)  # one extend, not a per-keyword update
    return fits.HDUList([fits.PrimaryHDU(header=srclist), table])


def search_footprint(exposure: ObservationExposure, factor: int) -> np.ndarray:
    """Fraction of each pixel of the search grid (``factor`` sky pixels a side) seen.

    From the exposure at every ``factor // 2``-th sky pixel for an even ``factor`` (2 × 2
    samples per search pixel, a quarter of the full map's cost), at every pixel
    otherwise.
    """
    stride = factor // 2 if factor % 2 == 0 else 1
    seen = exposure.map(stride) > 0
    per_side = factor // stride
    return bin_image(seen.astype(float), per_side) / per_side**2


def relative_exposure_at(
    exposure: ObservationExposure,
) -> RelativeExposure:
    """Exposure at sky positions (nearest pixel, 0 off the grid) over the on-axis exposure.

    The exposure of the pixel holding each position (:meth:`ObservationExposure.at`, the
    map's value) divided by that of a pixel seen on the best detector pixel throughout:
    counts and background come out as on-axis equivalents.
    """
    on_axis = exposure.on_axis_seconds

    def relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ix = np.floor(np.asarray(x, dtype=float) - 0.5).astype(np.int64)
        iy = np.floor(np.asarray(y, dtype=float) - 0.5).astype(np.int64)
        ok = (ix >= 0) & (ix < SKY_NPIX) & (iy >= 0) & (iy < SKY_NPIX)
        if on_axis <= 0:
            return np.zeros(ix.shape)
        seconds = exposure.at(np.clip(ix, 0, SKY_NPIX - 1) + 1, np.clip(iy, 0, SKY_NPIX - 1) + 1)
        return np.where(ok, seconds / on_axis, 0.0)

    return relative


def search_sources(
    image: np.ndarray,
    seen_fraction: np.ndarray,
    psf: Psf,
    roll: float,
    pixel_arcmin: float,
    config: DetectConfig,
) -> list[Candidate]:
    """PSF-matched search on the image binned by ``config.search_binning``.

    Parameters
    ----------
    image
        Counts per sky pixel, ``[y, x]``.
    seen_fraction
        Fraction of each binned pixel the detector saw (:func:`search_footprint`).
    psf, roll
        PSF calibration and roll (degrees) turning its arms onto the sky.
    pixel_arcmin
        Sky pixel side, arcmin.
    config
        Brick parameters.

    Returns
    -------
    list of Candidate
        In unbinned sky pixels, most significant first.
    """
    factor = config.search_binning
    search_pix = pixel_arcmin * factor
    found = find_sources(
        bin_image(image, factor),
        seen_fraction,
        psf_kernel(psf, roll, search_pix, config.kernel_radius_arcmin),
        config.threshold_sigma,
        max(int(round(config.background_block_arcmin / search_pix)), 2),
        config.background_window_blocks,
        0.75 * config.fit_radius_arcmin / search_pix,
        config.max_sources,
        config.confusion_fraction,
    )
    return [unbinned(candidate, factor) for candidate in found]


def localise_source(
    x: np.ndarray,
    y: np.ndarray,
    chosen: Candidate,
    sources: list[Candidate],
    relative_exposure: np.ndarray | RelativeExposure,
    psf: Psf,
    roll: float,
    pixel_arcmin: float,
    config: DetectConfig,
) -> PositionFit | None:
    """Maximum-likelihood position of ``chosen``, the other sources held fixed.

    The aperture is centred on the search's peak; when the fit lands more than
    ``RECENTRE_ARCMIN`` from it, the aperture is centred again on the fit and the fit
    repeated from there, so that the position does not depend on where the search grid
    put the peak. ``relative_exposure`` is the exposure over the on-axis exposure: a map
    ``[y, x]`` or a function of sky X/Y (:func:`relative_exposure_at`).
    """
    others = [(s.x, s.y, s.counts) for s in sources if s is not chosen]
    centre, counts, fit = (chosen.x, chosen.y), chosen.counts, None
    for _ in range(1 + RECENTRE_PASSES):
        ap = make_aperture(
            x,
            y,
            centre,
            config.fit_radius_arcmin,
            pixel_arcmin,
            relative_exposure,
            config.fit_grid_arcmin,
            others,
            psf,
            roll,
        )
        refit = fit_position(ap, psf, roll, counts, pixel_arcmin, centre)
        if refit is None:
            return fit  # None at the first attempt; else the fit before the recentring
        fit = refit
        moved = np.hypot(fit.x - centre[0], fit.y - centre[1]) * pixel_arcmin
        if moved <= RECENTRE_ARCMIN:
            break
        centre, counts = (fit.x, fit.y), fit.counts
    return fit


def detect_sources(
    l2_events: fits.HDUList, calibration: dict, config: DetectConfig
) -> dict[str, Any]:
    """Run the detection chain on an L2 event file; the four products of the brick.

    Parameters
    ----------
    l2_events
        L2 file (EVENTS with sky X/Y and their WCS, GTI, ATTITUDE).
    calibration
        ``PSF``, ``BADPIX``, ``VIGNET`` and ``TELDEF``.
    config
        Brick parameters.
    """
    events = events_hdu(l2_events)
    header = events.header
    psf = _calibration(calibration, "PSF")
    geometry = _calibration(calibration, "TELDEF")
    pixel_arcmin = geometry.plate_scale_arcsec / 60.0
    exposure = observation_exposure(l2_events, calibration, ExposureConfig())
    wcs, pointings = exposure.wcs, exposure.pointings
    roll = mean_roll_deg(pointings, header)
    exposure_s = float(sum(p.seconds for p in pointings))
    summary = _observation_summary(header, roll, exposure_s)
    x, y = _event_positions(events)
    image = counts_image(x, y, SKY_NPIX)
    sources: list[Candidate] = []
    if len(x) and exposure_s > 0:
        footprint = search_footprint(exposure, config.search_binning)
        sources = search_sources(image, footprint, psf, roll, pixel_arcmin, config)
    position = _no_detection(_why_nothing(len(x), exposure_s), len(sources), summary)
    if sources:
        chosen = _select(sources, wcs, header, config)
        relative = relative_exposure_at(exposure)
        fit = localise_source(x, y, chosen, sources, relative, psf, roll, pixel_arcmin, config)
        if fit is None:
            reason = "too few events about the source to fit a position"
            position = _no_detection(reason, len(sources), summary)
        else:
            position = _position_dict(fit, chosen, len(sources), wcs, summary, config)
    product = product_header(header, f"mxt-detect {VERSION}", "SRCLIST")
    return {
        "image": _image_hdulist(image, wcs, product),
        "sources": _sources_hdulist(sources, wcs, header, exposure_s, product),
        "position": position,
        "region": ds9_region(position, sources, wcs),
    }


def _run(inputs: dict, calibration: dict, config: DetectConfig) -> dict:
    return detect_sources(inputs["l2_events"], calibration, config)


BRICK = Brick(
    name="detect",
    version=VERSION,
    inputs=(L2_EVENTS,),
    outputs=(
        IMAGE,
        SOURCES,
        POSITION,
        REGION,
    ),
    caldb=("PSF", "BADPIX", "VIGNET", "TELDEF"),
    config=DetectConfig,
    run=_run,
)
