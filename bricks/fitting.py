"""Poisson likelihood helpers shared by the decay and spectral fits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def cash_statistic(model: np.ndarray, counts: np.ndarray) -> float:
    """Cash's C = 2 sum(m - n ln m) (-2 ln L up to a constant) of counts ``n``, model ``m``."""
    model = np.maximum(model, 1e-300)
    return float(2.0 * np.sum(model - counts * np.log(model)))


def curvature_errors(
    statistic: Callable[[np.ndarray], float], best: np.ndarray, step: float = 1e-3
) -> list[float | None]:
    """1-sigma parameter errors from the Hessian of a -2 ln L statistic at its minimum.

    Central finite differences of ``step`` in each parameter; None where the curvature
    is not positive (a fit at a boundary or a flat direction).
    """
    n = len(best)
    unit = np.eye(n) * step
    hessian = np.empty((n, n))
    for i in range(n):  # n is 2: four evaluations per element
        for j in range(n):
            hessian[i, j] = (
                statistic(best + unit[i] + unit[j])
                - statistic(best + unit[i] - unit[j])
                - statistic(best - unit[i] + unit[j])
                + statistic(best - unit[i] - unit[j])
            ) / (4.0 * step * step)
    try:
        variances = np.diag(2.0 * np.linalg.inv(hessian))
    except np.linalg.LinAlgError:
        return [None] * n
    return [float(np.sqrt(v)) if np.isfinite(v) and v > 0 else None for v in variances]


def wstat(
    source_model: np.ndarray, src_counts: np.ndarray, bkg_counts: np.ndarray, area_ratio: float
) -> float:
    """XSPEC's W statistic: Cash's C with the background profiled out, channel by channel.

    The background spectrum is noisy; holding it fixed biases fits of faint channels
    (a channel with background counts but none in the background region pushes the
    source model up). W maximises the joint Poisson likelihood of the source- and
    background-region counts over each channel's background level (XSPEC manual,
    "Poisson data with Poisson background", with source exposure 1 and background
    exposure ``1 / area_ratio`` in units of the source region's counts).

    Parameters
    ----------
    source_model
        Expected source counts in the source region, per channel or bin.
    src_counts, bkg_counts
        Observed counts in the source and background regions.
    area_ratio
        Source region area over background region area (BACKSCAL ratio).
    """
    ts, tb = 1.0, 1.0 / area_ratio
    tsum = ts + tb
    m = np.maximum(np.asarray(source_model, dtype=np.float64), 1e-300)
    s = np.asarray(src_counts, dtype=np.float64)
    b = np.asarray(bkg_counts, dtype=np.float64)
    d = np.sqrt((tsum * m - s - b) ** 2 + 4.0 * tsum * b * m)
    f = np.maximum((s + b - tsum * m + d) / (2.0 * tsum), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        general = (
            ts * m
            + tsum * f
            - s * np.log(ts * m + ts * f)
            - b * np.log(tb * f)
            - np.where(s > 0, s * (1.0 - np.log(s)), 0.0)
            - np.where(b > 0, b * (1.0 - np.log(b)), 0.0)
        )
        no_source = ts * m - b * np.log(tb / tsum)
        low_model = m < s / tsum
        no_bkg = np.where(
            low_model,
            -tb * m - s * np.log(ts / tsum),
            ts * m + np.where(s > 0, s * (np.log(s) - np.log(ts * m) - 1.0), 0.0),
        )
    per_channel = np.where(s == 0, no_source, np.where(b == 0, no_bkg, general))
    return float(2.0 * np.sum(per_channel))
