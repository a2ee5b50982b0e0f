"""Maximum-likelihood position of one source on the unbinned events.

Within a circular aperture about the detection, the events are a Poisson process of
rate ``E(u) · [N · ρ(u − p) + b]`` per arcmin², with ``ρ`` the lobster-eye PSF turned to
the sky by the roll, ``E`` the relative exposure (bad pixels, edges, vignetting), ``N``
the source counts, ``b`` the background per arcmin² and ``p`` the position. The Cash
statistic ``C = 2 [Σ_aperture E·(Nρ + b) − Σ_events ln(Nρ + b)]`` is minimised over
``(p, N, b)``; the covariance of ``p`` is twice the inverse Hessian of ``C`` (its
position block, ``N`` and ``b`` profiled), and the 90 % radius is that of the circle
holding 90 % of the corresponding bivariate normal, the circular version of the
ΔC = 4.605 contour for two parameters.

``N`` and ``b`` are profiled at each trial position (:func:`_best_counts`, Newton on a
convex function); the position is found by Newton's method on the profiled statistic
(:func:`_newton_minimise`, central differences) from the better of the aperture centre
and the events' local mode, with the simplex as fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.optimize import brentq, minimize

from bricks.calibration import Psf
from bricks.wcs import sky_to_detector_offsets

RelativeExposure = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Relative exposure (over the on-axis one) at sky X/Y pixels; 0 off the grid."""


@dataclass(frozen=True)
class PositionFit:
    """Result of the maximum-likelihood fit, in sky pixels and arcsec.

    Parameters
    ----------
    x, y
        Best position, sky pixels (FITS 1-based).
    counts
        Source counts (whole PSF, exposure-corrected to the on-axis efficiency).
    background_per_arcmin2
        Background counts per arcmin² (on-axis efficiency).
    err90_stat_arcsec
        Radius of the circle holding the position with 90 % probability (statistical).
    cov_arcmin2
        Covariance of the position along sky X and Y, arcmin².
    ts
        Test statistic: C(no source) − C(best), the likelihood detection strength.
    n_events
        Events in the aperture.
    converged
        Whether the minimiser reported success.
    """

    x: float
    y: float
    counts: float
    background_per_arcmin2: float
    err90_stat_arcsec: float
    cov_arcmin2: tuple[tuple[float, float], tuple[float, float]]
    ts: float
    n_events: int
    converged: bool


@dataclass(frozen=True)
class Aperture:
    """The events and the integration grid of one fit, offsets in arcmin from the centre.

    ``u, v`` are the events (``weight`` 1 each), or, for a crowded aperture, the sky
    pixels holding events (``weight`` their counts). ``other_events`` and ``other_grid``
    hold the fixed density (counts per arcmin²) the other detected sources put there.
    """

    u: np.ndarray
    v: np.ndarray
    weight: np.ndarray
    grid_u: np.ndarray
    grid_v: np.ndarray
    grid_exposure_area: np.ndarray
    other_events: np.ndarray
    other_grid: np.ndarray

    @property
    def n_events(self) -> int:
        """Events in the aperture."""
        return int(self.weight.sum())

    @cached_property
    def exposed_area(self) -> float:
        """Exposure-weighted area of the aperture, arcmin² (on-axis equivalent)."""
        return float(np.sum(self.grid_exposure_area))

    @cached_property
    def other_expected(self) -> float:
        """Counts the other sources are expected to put in the aperture."""
        return float(np.sum(self.grid_exposure_area * self.other_grid))

    @cached_property
    def grid_and_events(self) -> tuple[np.ndarray, np.ndarray]:
        """Grid points then events, ``(u, v)`` arcmin: one PSF evaluation covers both."""
        return np.concatenate([self.grid_u, self.u]), np.concatenate([self.grid_v, self.v])


def circular_radius90(cov: np.ndarray) -> float:
    """Radius holding 90 % of a zero-mean bivariate normal of covariance ``cov``.

    ``P(r) = (1 / 2π√|Σ|) ∫ (1 − exp(−r² q(θ)/2)) / q(θ) dθ`` with ``q = uᵀΣ⁻¹u``; for a
    circular Σ = σ²I it gives r² = 4.605 σ², the ΔC = 4.605 contour.
    """
    inv = np.linalg.inv(cov)
    theta = np.linspace(0.0, 2.0 * np.pi, 721)[:-1]
    u = np.stack([np.cos(theta), np.sin(theta)])
    q = np.einsum("in,ij,jn->n", u, inv, u)
    norm = 1.0 / (2.0 * np.pi * np.sqrt(np.linalg.det(cov)))

    def enclosed(r: float) -> float:
        return float(norm * np.mean((1.0 - np.exp(-0.5 * r * r * q)) / q) * 2.0 * np.pi) - 0.9

    top = 10.0 * np.sqrt(np.max(np.linalg.eigvalsh(cov)))
    return float(brentq(enclosed, 1e-9 * top, top))


def make_aperture(
    x: np.ndarray,
    y: np.ndarray,
    centre: tuple[float, float],
    radius_arcmin: float,
    pixel_arcmin: float,
    relative_exposure: np.ndarray | RelativeExposure,
    grid_step_arcmin: float,
    others: Sequence[tuple[float, float, float]] = (),
    psf: Psf | None = None,
    roll_deg: float = 0.0,
    max_unbinned: int = 5000,
) -> Aperture:
    """Select the events within the aperture and lay the integration grid over it.

    Up to ``max_unbinned`` events the likelihood is unbinned; beyond, the events are
    counted per sky pixel (13.45″, against a PSF core of 3.4′ σ: no loss that matters)
    so that the fit costs the same for 10⁴ or 10⁷ events.

    Parameters
    ----------
    x, y
        Event sky positions, pixels.
    centre
        Aperture centre, sky pixels.
    radius_arcmin
        Aperture radius.
    pixel_arcmin
        Sky pixel side.
    relative_exposure
        Exposure map divided by its on-axis value, ``[y, x]`` 0-based; or a function
        of sky X/Y (pixels) giving it (0 off the grid).
    grid_step_arcmin
        Integration grid step.
    others
        Other sources ``(x, y, counts)`` (sky pixels, whole-PSF counts), held fixed.
    psf, roll_deg
        PSF and roll for the other sources' density (needed when ``others`` is given).
    max_unbinned
        Most events fitted one by one.
    """
    cx, cy = centre
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    # the square about the disc first (a pixel to spare): the disc test on a few events
    reach = radius_arcmin / pixel_arcmin + 1.0
    near = (x >= cx - reach) & (x <= cx + reach) & (y >= cy - reach) & (y <= cy + reach)
    x, y = x[near], y[near]
    u = (x - cx) * pixel_arcmin
    v = (y - cy) * pixel_arcmin
    inside = u * u + v * v <= radius_arcmin**2
    u, v = u[inside], v[inside]
    weight = np.ones(u.size)
    if u.size > max_unbinned:
        u, v, weight = _per_pixel(x[inside], y[inside], centre, pixel_arcmin)
    half = int(np.ceil(radius_arcmin / grid_step_arcmin))
    g = (np.arange(-half, half + 1)) * grid_step_arcmin
    gu, gv = np.meshgrid(g, g)
    in_disc = gu * gu + gv * gv <= radius_arcmin**2
    gu, gv = gu[in_disc], gv[in_disc]
    sky_x, sky_y = cx + gu / pixel_arcmin, cy + gv / pixel_arcmin
    if callable(relative_exposure):
        grid_e = relative_exposure(sky_x, sky_y)
    else:
        grid_e = _exposure_at(relative_exposure, sky_x, sky_y)
    other_events, other_grid = np.zeros(u.size), np.zeros(gu.shape)
    for ox, oy, counts in others:
        du, dv = (ox - cx) * pixel_arcmin, (oy - cy) * pixel_arcmin
        ex, ey = sky_to_detector_offsets(u - du, v - dv, roll_deg)
        other_events += counts * psf.density(ex, ey)
        gx, gy = sky_to_detector_offsets(gu - du, gv - dv, roll_deg)
        other_grid += counts * psf.density(gx, gy)
    return Aperture(
        u=u,
        v=v,
        weight=weight,
        grid_u=gu,
        grid_v=gv,
        grid_exposure_area=grid_e * grid_step_arcmin**2,
        other_events=other_events,
        other_grid=other_grid,
    )


def _per_pixel(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float], pixel_arcmin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events counted per sky pixel: pixel-centre offsets (arcmin) and counts."""
    ix = np.floor(x - 0.5).astype(np.int64)
    iy = np.floor(y - 0.5).astype(np.int64)
    x0, y0 = ix.min(), iy.min()
    width = int(ix.max() - x0 + 1)
    counts = np.bincount((iy - y0) * width + (ix - x0))
    occupied = np.flatnonzero(counts)
    px = x0 + occupied % width + 1.0
    py = y0 + occupied // width + 1.0
    return (
        (px - centre[0]) * pixel_arcmin,
        (py - centre[1]) * pixel_arcmin,
        counts[occupied].astype(float),
    )


def _exposure_at(relative_exposure: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Relative exposure at sky positions (nearest pixel; 0 off the grid)."""
    ny, nx = relative_exposure.shape
    ix = np.floor(np.asarray(x) - 0.5).astype(np.int64)
    iy = np.floor(np.asarray(y) - 0.5).astype(np.int64)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    return np.where(ok, relative_exposure[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)], 0.0)


def _psf_at(ap: Aperture, psf: Psf, roll_deg: float, pu: float, pv: float) -> _PsfValues:
    """The PSF centred at ``(pu, pv)`` (arcmin) on the grid and on the events, per arcmin²."""
    # grid and events in one evaluation (the density is elementwise): half the calls
    both_u, both_v = ap.grid_and_events
    dx, dy = sky_to_detector_offsets(both_u - pu, both_v - pv, roll_deg)
    density = np.asarray(psf.density(dx, dy))
    grid, events = density[: ap.grid_u.size], density[ap.grid_u.size :]
    return _PsfValues(float(np.sum(ap.grid_exposure_area * grid)), events)


@dataclass(frozen=True)
class _PsfValues:
    """PSF at one trial position: exposure-weighted integral over the grid, per-event values."""

    expected_per_count: float
    events: np.ndarray


def _cash_at(ap: Aperture, psf_values: _PsfValues, n: float, b: float) -> float:
    """Cash statistic for source counts ``n`` and background ``b`` (per arcmin²)."""
    expected = n * psf_values.expected_per_count + b * ap.exposed_area + ap.other_expected
    rate = np.maximum(n * psf_values.events + b + ap.other_events, 1e-300)
    return float(2.0 * (expected - np.dot(ap.weight, np.log(rate))))


def cash(params: np.ndarray, ap: Aperture, psf: Psf, roll_deg: float) -> float:
    """Cash statistic of ``params = (p_u, p_v, ln N, ln b)`` (arcmin, counts, per arcmin²)."""
    pu, pv, ln_n, ln_b = params
    return _cash_at(ap, _psf_at(ap, psf, roll_deg, pu, pv), np.exp(ln_n), np.exp(ln_b))


def _best_counts(ap: Aperture, psf_values: _PsfValues, n: float, b: float) -> tuple[float, float]:
    """Source counts and background minimising the Cash statistic at a fixed position.

    ``C`` is convex in ``θ = (N, b)`` (a Poisson likelihood linear in both): Newton
    steps from the given start, halved until downhill. A parameter the plain step would
    take to zero or below (no background, or no source, at the boundary of the range)
    is stepped in its logarithm instead, so it approaches zero geometrically while the
    other one still converges, rather than stalling the whole step. Stops once a step
    lowers ``C`` by less than 1e-9 + 1e-10 |C| (the rounding of a sum over the events),
    or the Newton step would (its quadratic model's decrease, ``−g·Δ``, when the
    Hessian is positive definite): a converged start costs no Cash evaluation.
    """
    rho, w = psf_values.events, ap.weight
    rho2 = rho * rho
    theta = np.array([n, b])
    current = _cash_at(ap, psf_values, n, b)
    tolerance = 1e-9 + 1e-10 * abs(current)
    for _ in range(100):
        rate = np.maximum(theta[0] * rho + theta[1] + ap.other_events, 1e-300)
        w_r = w / rate
        w_r2 = w_r / rate
        grad = np.array(
            [psf_values.expected_per_count - np.dot(w_r, rho), ap.exposed_area - w_r.sum()]
        )
        h_nb = float(np.dot(w_r2, rho))
        hess = np.array([[float(np.dot(w_r2, rho2)), h_nb], [h_nb, float(w_r2.sum())]])
        step = _newton_step(hess, grad)
        in_log = theta + step <= 0
        if in_log.any():
            # chain rule for θ_i = exp(φ_i) on the logarithmic components
            scale = np.where(in_log, theta, 1.0)
            hess = hess * np.outer(scale, scale) + np.diag(np.where(in_log, grad * theta, 0.0))
            grad = grad * scale
            step = _newton_step(hess, grad)
        if _positive_definite(hess) and -float(np.dot(grad, step)) < tolerance:
            break  # the quadratic model's decrease of C (Newton decrement): converged
        accepted = None
        for halving in range(40):
            factor = 0.5**halving
            trial = theta + factor * step
            if in_log.any():
                trial[in_log] = theta[in_log] * np.exp(factor * step[in_log])
            if np.all(trial > 0):
                value = _cash_at(ap, psf_values, trial[0], trial[1])
                if value <= current:
                    accepted = trial, value
                    break
        if accepted is None:
            break
        improvement = current - accepted[1]
        theta, current = accepted
        tolerance = 1e-9 + 1e-10 * abs(current)
        if improvement < tolerance:
            break
    return float(theta[0]), float(theta[1])


def _positive_definite(hess: np.ndarray) -> bool:
    """Whether a symmetric 2 × 2 matrix is positive definite (Sylvester's criterion)."""
    a, b, d = float(hess[0, 0]), float(hess[0, 1]), float(hess[1, 1])
    return a > 0 and a * d - b * b > 0


def _newton_step(hess: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """``−H⁻¹ g`` of a symmetric 2 × 2 ``H``; a gradient step scaled by the curvature when
    H is not positive definite (Sylvester: ``H₀₀ > 0`` and ``det H > 0``).

    Closed form: ``np.linalg``'s Cholesky and solve cost ~20 µs each at this size, and
    the fit takes ~200 such steps.
    """
    a, b, d = float(hess[0, 0]), float(hess[0, 1]), float(hess[1, 1])
    det = a * d - b * b
    if _positive_definite(hess) and np.isfinite(det):
        g0, g1 = float(grad[0]), float(grad[1])
        return np.array([b * g1 - d * g0, b * g0 - a * g1]) / det
    return -grad / np.maximum(np.abs(np.diag(hess)), 1e-300)


def _background_only_cash(ap: Aperture, ln_b: float) -> float:
    """Cash statistic without the source: the background (and other sources) alone.

    The source term is dropped rather than evaluated at a vanishing ``N``: the same
    statistic without PSF evaluations. Alone in the aperture, the best background is
    exactly the events over the exposed area; beside other sources, Newton steps in
    ``ln b`` (``C`` is convex in ``b``) from ``ln_b``, halved until downhill.
    """

    def background_cash(b: float) -> float:
        rate = np.maximum(b + ap.other_events, 1e-300)
        expected = b * ap.exposed_area + ap.other_expected
        return float(2.0 * (expected - np.dot(ap.weight, np.log(rate))))

    if not np.any(ap.other_events):
        return background_cash(max(float(ap.weight.sum()) / ap.exposed_area, 1e-300))
    phi = float(ln_b)
    current = background_cash(np.exp(phi))
    for _ in range(100):
        b = np.exp(phi)
        rate = np.maximum(b + ap.other_events, 1e-300)
        w_r = ap.weight / rate
        slope = b * (ap.exposed_area - float(w_r.sum()))  # d(C/2)/d ln b
        curvature = slope + b * b * float(np.sum(w_r / rate))
        step = -slope / curvature if curvature > 0 else -np.sign(slope)
        for halving in range(40):
            value = background_cash(np.exp(phi + step * 0.5**halving))
            if value <= current:
                break
        else:
            break
        improvement = current - value
        phi, current = phi + step * 0.5**halving, value
        if improvement < 1e-9 + 1e-10 * abs(current):
            break
    return current


def _hessian(f: Callable[[np.ndarray], float], x0: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function."""
    k = len(x0)
    h = np.zeros((k, k))
    f0 = f(x0)
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = steps[i]
        h[i, i] = (f(x0 + ei) - 2.0 * f0 + f(x0 - ei)) / steps[i] ** 2
        for j in range(i + 1, k):
            ej = np.zeros(k)
            ej[j] = steps[j]
            h[i, j] = h[j, i] = (
                f(x0 + ei + ej) - f(x0 + ei - ej) - f(x0 - ei + ej) + f(x0 - ei - ej)
            ) / (4.0 * steps[i] * steps[j])
    return h


def fit_position(
    ap: Aperture,
    psf: Psf,
    roll_deg: float,
    counts_guess: float,
    pixel_arcmin: float,
    centre: tuple[float, float],
) -> PositionFit | None:
    """Maximum-likelihood position of the source in an aperture.

    Parameters
    ----------
    ap
        :func:`make_aperture`.
    psf
        PSF calibration.
    roll_deg
        Position angle of +RAWY, degrees.
    counts_guess
        Starting source counts (matched-filter estimate).
    pixel_arcmin
        Sky pixel side.
    centre
        Aperture centre, sky pixels.

    Returns
    -------
    PositionFit or None
        None when the aperture holds too few events to fit (fewer than 3).
    """
    n_ev = ap.n_events
    area = ap.exposed_area
    if n_ev < 3 or area <= 0:
        return None
    b0 = max(0.5 * n_ev / area, 1e-6)
    n0 = float(np.clip(counts_guess, 1.0, 10.0 * n_ev))
    psf_cache: dict[tuple[float, float], _PsfValues] = {}

    def psf_values(pu: float, pv: float) -> _PsfValues:
        # the Hessian's steps in ln N, ln b revisit positions: the PSF is evaluated once
        key = (float(pu), float(pv))
        if key not in psf_cache:
            psf_cache[key] = _psf_at(ap, psf, roll_deg, pu, pv)
        return psf_cache[key]

    def objective(p: np.ndarray) -> float:
        return _cash_at(ap, psf_values(p[0], p[1]), np.exp(p[2]), np.exp(p[3]))

    # N and b are profiled (exact Newton at each position), so the minimiser moves in the
    # position only: a third of the Cash evaluations of a four-parameter one.
    counts = [n0, b0]

    def profile(p: np.ndarray) -> float:
        values = psf_values(p[0], p[1])
        counts[:] = _best_counts(ap, values, counts[0], counts[1])
        return _cash_at(ap, values, counts[0], counts[1])

    # Newton from the better of the aperture centre (the search's peak, on its coarse
    # grid) and the local mode of the events: fewer iterations for a bright source.
    start = min((np.zeros(2), _event_mode(ap)), key=lambda p: profile(p))
    position, converged = _newton_minimise(profile, start)
    if not converged:
        # A surface Newton cannot descend (far from quadratic): the simplex, and a restart
        # from its optimum against a collapsed simplex.
        simplex = np.vstack([position, position + np.diag([0.5, 0.5])])
        result = minimize(
            profile,
            position,
            method="Nelder-Mead",
            options={**_NM_OPTIONS, "initial_simplex": simplex},
        )
        result = minimize(profile, result.x, method="Nelder-Mead", options=_NM_OPTIONS)
        position, converged = result.x, bool(result.success)
    n_best, b_best = _best_counts(ap, psf_values(*position), counts[0], counts[1])
    best = np.array([position[0], position[1], np.log(n_best), np.log(b_best)])
    hess = _hessian(objective, best, np.array([0.05, 0.05, 0.02, 0.02]))
    cov = _position_covariance(hess)
    pu, pv = best[0], best[1]
    return PositionFit(
        x=float(centre[0] + pu / pixel_arcmin),
        y=float(centre[1] + pv / pixel_arcmin),
        counts=float(np.exp(best[2])),
        background_per_arcmin2=float(np.exp(best[3])),
        err90_stat_arcsec=60.0 * circular_radius90(cov),
        cov_arcmin2=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        ts=max(_background_only_cash(ap, float(best[3])) - objective(best), 0.0),
        n_events=n_ev,
        converged=converged,
    )


_NM_OPTIONS = {"xatol": 1e-3, "fatol": 1e-3, "maxiter": 2000}
_POSITION_TOLERANCE = 1e-3
"""Newton stops once its step is this short, arcmin (0.06″; the simplex's ``xatol``)."""


def _event_mode(
    ap: Aperture,
    sigma_arcmin: float = 3.0,
    reach_arcmin: float = 1.0,
    tolerance_arcmin: float = 2e-3,
    max_iterations: int = 30,
) -> np.ndarray:
    """Mode of the aperture's events smoothed by a Gaussian (mean shift), arcmin.

    A start for the fit only: the PSF's core and cross are symmetric, so the events
    smoothed by about the core's width peak near the source; background and neighbours
    bias it, the fit does not care. Iterates until a shift is shorter than
    ``tolerance_arcmin``; kept within ``reach_arcmin`` of the centre.
    """
    p = np.zeros(2)
    for _ in range(max_iterations):
        d2 = (ap.u - p[0]) ** 2 + (ap.v - p[1]) ** 2
        w = ap.weight * np.exp(-0.5 * d2 / sigma_arcmin**2)
        total = float(w.sum())
        if total <= 0:
            break
        moved = np.array([float(np.dot(w, ap.u)), float(np.dot(w, ap.v))]) / total
        shift, p = float(np.hypot(*(moved - p))), moved
        if shift < tolerance_arcmin:
            break
    distance = float(np.hypot(*p))
    return p * min(1.0, reach_arcmin / distance) if distance > 0 else p


def _newton_minimise(
    f: Callable[[np.ndarray], float],
    start: np.ndarray,
    step: float = 0.05,
    trust: float = 1.0,
    max_iterations: int = 30,
) -> tuple[np.ndarray, bool]:
    """Minimum of a smooth function of the position (arcmin) by Newton's method.

    Gradient and Hessian by central differences of ``step`` (six evaluations about the
    current point: ±u, ±v and ±(u + v) give the mixed derivative), a step of at most
    ``trust`` arcmin, halved until downhill; a scaled gradient step where the Hessian is
    not positive definite. The profiled Cash statistic is nearly quadratic about its
    optimum: a few iterations, a third of the simplex's evaluations.

    Returns
    -------
    position, converged
        Converged once the Hessian is positive definite (a minimum, not a saddle) and
        the Newton step from the position is shorter than :data:`_POSITION_TOLERANCE`.
    """
    x = np.asarray(start, dtype=float).copy()
    f0 = f(x)
    eu, ev = np.array([step, 0.0]), np.array([0.0, step])
    for _ in range(max_iterations):
        fpu, fmu, fpv, fmv = f(x + eu), f(x - eu), f(x + ev), f(x - ev)
        fpp, fmm = f(x + eu + ev), f(x - eu - ev)
        grad = np.array([fpu - fmu, fpv - fmv]) / (2.0 * step)
        huu = (fpu - 2.0 * f0 + fmu) / step**2
        hvv = (fpv - 2.0 * f0 + fmv) / step**2
        huv = (fpp + fmm - fpu - fmu - fpv - fmv + 2.0 * f0) / (2.0 * step**2)
        hessian = np.array([[huu, huv], [huv, hvv]])
        delta = _newton_step(hessian, grad)
        length = float(np.hypot(*delta))
        if length < _POSITION_TOLERANCE and _positive_definite(hessian):
            # converged: stay on the stencil's centre, whose neighbours the covariance's
            # finite differences (same step) then find evaluated already
            return x, True
        if length > trust:
            delta *= trust / length
        for _ in range(30):
            trial = x + delta
            f_trial = f(trial)
            if f_trial <= f0:
                break
            delta *= 0.5
        else:
            return x, False
        x, f0 = trial, f_trial
    return x, False


def _position_covariance(hess: np.ndarray) -> np.ndarray:
    """Position block of 2·H⁻¹ (C = −2 ln L), the other parameters profiled.

    A parameter without curvature (the background pinned at zero, at the boundary of
    its range) is held fixed: its row and column are left out before inverting. A
    wide isotropic covariance (2′ rms) stands for a singular fit.
    """
    diag = np.diag(hess)
    free = np.flatnonzero(diag > 1e-8 * np.max(np.abs(diag)))
    if 0 in free and 1 in free:
        try:
            full = 2.0 * np.linalg.inv(hess[np.ix_(free, free)])
            cov = full[:2, :2]
            if np.all(np.isfinite(cov)) and np.all(np.linalg.eigvalsh(cov) > 0):
                return cov
        except np.linalg.LinAlgError:
            pass
    return np.eye(2) * 4.0
