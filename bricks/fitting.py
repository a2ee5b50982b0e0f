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
    return WStat(src_counts, bkg_counts, area_ratio)(source_model)


class WStat:
    """:func:`wstat` of fixed counts as a function of the source model (a fit's objective).

    What does not depend on the model (the channel cases, the count-only terms) is
    computed once; each channel's term is evaluated only in its own case. Every value
    equals :func:`wstat`'s, which calls this.

    Parameters
    ----------
    src_counts, bkg_counts
        Observed counts in the source and background regions.
    area_ratio
        Source region area over background region area (BACKSCAL ratio).
    """

    def __init__(self, src_counts: np.ndarray, bkg_counts: np.ndarray, area_ratio: float) -> None:
        self.ts, self.tb = 1.0, 1.0 / area_ratio
        self.tsum = self.ts + self.tb
        s = np.asarray(src_counts, dtype=np.float64)
        b = np.asarray(bkg_counts, dtype=np.float64)
        self.size = s.size
        no_source = s == 0
        no_bkg = ~no_source & (b == 0)
        general = ~no_source & ~no_bkg
        # indices (not masks) of each case; the general case's count-only terms
        self.no_source = np.flatnonzero(no_source)
        self.no_bkg = np.flatnonzero(no_bkg)
        self.general = np.flatnonzero(general)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.ns_const = (b * np.log(self.tb / self.tsum))[self.no_source]
            sg, bg = s[self.general], b[self.general]
            self.s_g, self.b_g = sg, bg
            self.s_term_g = np.where(sg > 0, sg * (1.0 - np.log(sg)), 0.0)
            self.b_term_g = np.where(bg > 0, bg * (1.0 - np.log(bg)), 0.0)
            self.s_nb = s[self.no_bkg]
            self.low_const_nb = self.s_nb * np.log(self.ts / self.tsum)
            self.log_s_nb = np.log(self.s_nb)

    def __call__(self, source_model: np.ndarray) -> float:
        """W for expected source counts ``source_model`` (per channel or bin)."""
        ts, tb, tsum = self.ts, self.tb, self.tsum
        m = np.maximum(np.asarray(source_model, dtype=np.float64), 1e-300)
        m = np.broadcast_to(m, (self.size,))
        per_channel = np.empty(self.size)
        m_ns = m[self.no_source]
        per_channel[self.no_source] = ts * m_ns - self.ns_const
        m_nb = m[self.no_bkg]
        s_nb = self.s_nb
        with np.errstate(divide="ignore", invalid="ignore"):
            per_channel[self.no_bkg] = np.where(
                m_nb < s_nb / tsum,
                -tb * m_nb - self.low_const_nb,
                ts * m_nb
                + np.where(s_nb > 0, s_nb * (self.log_s_nb - np.log(ts * m_nb) - 1.0), 0.0),
            )
            m_g, s, b = m[self.general], self.s_g, self.b_g
            d = np.sqrt((tsum * m_g - s - b) ** 2 + 4.0 * tsum * b * m_g)
            f = np.maximum((s + b - tsum * m_g + d) / (2.0 * tsum), 1e-300)
            per_channel[self.general] = (
                ts * m_g
                + tsum * f
                - s * np.log(ts * m_g + ts * f)
                - b * np.log(tb * f)
                - self.s_term_g
                - self.b_term_g
            )
        return float(2.0 * np.sum(per_channel))

    def derivatives(self, source_model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and second derivatives of each channel's term of W with respect to its
        source model (W is twice the sum of the terms), the background level profiled.

        With the background level ``f`` at its optimum the first derivative is the
        partial one, ``ts - s / (m + f)`` (envelope theorem); the second follows from
        ``f``'s own dependence on ``m`` (implicit in ``tsum = s / (m + f) + b / f``):
        ``A B / (A + B)`` with ``A = s / (m + f)²``, ``B = b / f²``.
        """
        ts, tb, tsum = self.ts, self.tb, self.tsum
        m = np.maximum(np.asarray(source_model, dtype=np.float64), 1e-300)
        m = np.broadcast_to(m, (self.size,))
        first = np.empty(self.size)
        second = np.zeros(self.size)
        first[self.no_source] = ts
        m_nb, s_nb = m[self.no_bkg], self.s_nb
        low = m_nb < s_nb / tsum
        first[self.no_bkg] = np.where(low, -tb, ts - s_nb / m_nb)
        second[self.no_bkg] = np.where(low, 0.0, s_nb / m_nb**2)
        m_g, s, b = m[self.general], self.s_g, self.b_g
        d = np.sqrt((tsum * m_g - s - b) ** 2 + 4.0 * tsum * b * m_g)
        f = np.maximum((s + b - tsum * m_g + d) / (2.0 * tsum), 1e-300)
        total = m_g + f
        first[self.general] = ts - s / total
        a = s / total**2
        second[self.general] = a / (1.0 + a * f * f / b)  # A B / (A + B), overflow-free
        return first, second
