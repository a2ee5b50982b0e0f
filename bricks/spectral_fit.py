"""Forward folding through an ARF and RMF, and an absorbed power-law fit by W statistic.

Reads the response files the way XSPEC does (MATRIX rows as channel groups, the ARF
multiplying each row), so it also checks that those files mean what they say. The fit
is the quick-look one: an absorbed power law, the background level of each channel
profiled out (XSPEC's W statistic: Cash with a Poisson background spectrum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from scipy import optimize, sparse

from bricks.errors import BadInput
from bricks.fitting import curvature_errors, wstat


@dataclass(frozen=True)
class Response:
    """A response: ``folding[k, i]`` = cm^2 x probability, energy bin i to channel k.

    Attributes
    ----------
    energ_lo, energ_hi
        Incident energy bins, keV.
    folding
        ARF x RMF, cm^2, sparse (n_channels, n_energies): the matrix is a narrow band.
    e_min, e_max
        Channel energy bounds, keV.
    """

    energ_lo: np.ndarray
    energ_hi: np.ndarray
    folding: sparse.csr_array
    e_min: np.ndarray
    e_max: np.ndarray

    def fold(self, photon_flux: np.ndarray) -> np.ndarray:
        """Counts/s per channel from photons/cm^2/s per energy bin."""
        return self.folding @ photon_flux


def response_from_files(arf: fits.HDUList, rmf: fits.HDUList) -> Response:
    """Build ARF x RMF from OGIP SPECRESP, MATRIX and EBOUNDS extensions."""
    try:
        specresp, matrix, ebounds = arf["SPECRESP"].data, rmf["MATRIX"].data, rmf["EBOUNDS"].data
    except KeyError as exc:
        raise BadInput(f"response file lacks extension {exc}") from None
    n_channels = len(ebounds)
    if len(specresp) != len(matrix):
        raise BadInput(f"ARF has {len(specresp)} energy bins, RMF {len(matrix)}")
    first = int(rmf["MATRIX"].header.get("TLMIN4", 0))
    dense = np.zeros((len(matrix), n_channels))
    n_grp = np.atleast_1d(matrix["N_GRP"])
    if np.any(n_grp > 1):
        raise BadInput("RMF rows with more than one channel group are not supported")
    f_chan = np.asarray(matrix["F_CHAN"]).reshape(len(matrix), -1)[:, 0] - first
    n_chan = np.asarray(matrix["N_CHAN"]).reshape(len(matrix), -1)[:, 0]
    for i, row in enumerate(matrix["MATRIX"]):  # variable-length rows: one slice each
        dense[i, f_chan[i] : f_chan[i] + n_chan[i]] = row[: n_chan[i]]
    dense *= np.asarray(specresp["SPECRESP"], dtype=np.float64)[:, None]
    return Response(
        energ_lo=np.asarray(matrix["ENERG_LO"], dtype=np.float64),
        energ_hi=np.asarray(matrix["ENERG_HI"], dtype=np.float64),
        folding=sparse.csr_array(dense.T),
        e_min=np.asarray(ebounds["E_MIN"], dtype=np.float64),
        e_max=np.asarray(ebounds["E_MAX"], dtype=np.float64),
    )


@dataclass(frozen=True)
class PowerLawFit:
    """Best absorbed power law.

    Attributes
    ----------
    gamma, gamma_err
        Photon index and its 1-sigma error (None when the curvature is not positive).
    norm
        Photons/cm^2/s/keV at 1 keV, before absorption.
    nh
        Absorbing column, 1e22 cm^-2 (the simulator's cross-section model).
    wstat
        W statistic at the best fit.
    n_channels
        Channels fitted.
    model_counts
        Source model plus scaled background, counts per channel.
    """

    gamma: float
    gamma_err: float | None
    norm: float
    nh: float
    wstat: float
    n_channels: int
    model_counts: np.ndarray


def fit_power_law(
    response: Response,
    src_counts: np.ndarray,
    bkg_counts: np.ndarray,
    backscal_ratio: float,
    exposure: float,
    good: np.ndarray,
) -> PowerLawFit:
    """Fit an absorbed power law to the source spectrum by W statistic.

    The absorption is the simulator's (:func:`bricks.simulate.absorbed_power_law`), so
    simulated scenes are fitted with the model that made them.

    Parameters
    ----------
    response
        ARF x RMF.
    src_counts, bkg_counts
        Counts per channel in the source and background regions.
    backscal_ratio
        Source BACKSCAL over background BACKSCAL.
    exposure
        Live time, s.
    good
        Channels to use (boolean per channel).
    """
    from bricks.simulate import absorbed_power_law

    if exposure <= 0 or src_counts[good].sum() < 10:
        raise BadInput("too few source counts or no exposure for a spectral fit")
    counts, background = src_counts[good], bkg_counts[good]
    folding = response.folding[np.flatnonzero(good)]  # fold only the fitted channels
    centre = 0.5 * (response.energ_lo + response.energ_hi)
    width = response.energ_hi - response.energ_lo  # 10 eV bins: centre x width suffices

    def expected(gamma: float, log_norm: float, nh: float) -> np.ndarray:
        photons = 10.0**log_norm * absorbed_power_law(centre, gamma, nh) * width
        return (folding @ photons) * exposure

    def statistic(params: np.ndarray) -> float:
        # |NH|: the column cannot be negative, and the fit may sit at 0
        model = expected(params[0], params[1], abs(params[2]))
        return wstat(model, counts, background, backscal_ratio)

    best = optimize.minimize(
        statistic,
        np.array([2.0, -1.0, 0.05]),
        method="Nelder-Mead",
        options={"xatol": 1e-5, "fatol": 1e-5, "maxiter": 4000},
    )
    gamma, log_norm, nh = best.x[0], best.x[1], abs(best.x[2])
    if nh < 1e-3:  # at the boundary the curvature in NH is undefined: hold NH there
        gamma_err = curvature_errors(
            lambda p: wstat(expected(p[0], p[1], nh), counts, background, backscal_ratio),
            best.x[:2],
        )[0]
    else:
        gamma_err = curvature_errors(statistic, best.x)[0]
    model = np.zeros_like(src_counts, dtype=np.float64)
    model[good] = expected(gamma, log_norm, nh) + backscal_ratio * background
    return PowerLawFit(
        float(gamma),
        gamma_err,
        float(10.0**log_norm),
        float(nh),
        float(best.fun),
        int(np.count_nonzero(good)),
        model,
    )


def fit_spectrum_files(
    src_pha: fits.HDUList, bkg_pha: fits.HDUList, arf: fits.HDUList, rmf: fits.HDUList
) -> PowerLawFit:
    """:func:`fit_power_law` on the spectrum brick's four files (good-quality channels)."""
    src, bkg = src_pha["SPECTRUM"], bkg_pha["SPECTRUM"]
    return fit_power_law(
        response_from_files(arf, rmf),
        np.asarray(src.data["COUNTS"], dtype=np.float64),
        np.asarray(bkg.data["COUNTS"], dtype=np.float64),
        float(src.header["BACKSCAL"]) / float(bkg.header["BACKSCAL"]),
        float(src.header["EXPOSURE"]),
        src.data["QUALITY"] == 0,
    )
