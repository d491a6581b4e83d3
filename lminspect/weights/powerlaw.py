"""weightwatcher's power-law fit of an eigenvalue spectrum, step for step.

weightwatcher 0.7.7 (``WW_powerlaw.WWFit``, its default ``pl_package='ww'``, ``xmax=None``)
fits the eigenvalues lambda = s^2 of a weight matrix like this, and so does
:func:`powerlaw_fit` (same order of floating-point operations, so the same argmin):

1. keep the eigenvalues > 1e-5 (``EVALS_THRESH``), sorted ascending, as float64: ``x``, N of them;
2. every eigenvalue but the largest is a candidate xmin, i = 0 .. N-2, tail n = N - i;
3. N >= 20: ``alpha_i = 1 + n / (sum(log x[i:]) - n log x[i])`` (the MLE); when alpha_i > 1,
   ``D_i = max |1 - (x[i:]/x[i])^(1-alpha_i) - arange(n)/n|`` (Kolmogorov-Smirnov distance
   between the fitted and the empirical CDF of the tail), else D_i = 1; the first i with
   the smallest D_i wins. There is no minimum tail length: a tail of 2 eigenvalues can win.
4. N < 20 ("small N"): only tails of >= 8 eigenvalues get a D (the others keep D = 1) and
   alpha uses (n-1) instead of n (bias-corrected MLE); weightwatcher computes a second
   objective, D - 0.868/sqrt(n), but its ``WWFit.__init__`` then picks the smallest D anyway,
   so the smallest D wins here too. If no tail qualifies (N < 9), the whole spectrum is fitted.

Reported beside alpha, as weightwatcher reports them: ``alpha_xmin`` (the chosen xmin),
``alpha_D`` (its KS distance), ``alpha_tail`` (eigenvalues >= xmin, weightwatcher's
``num_pl_spikes``), ``alpha_sigma`` = (alpha - 1) / sqrt(tail), and ``alpha_warning``:
"over-trained" when alpha < 2, "under-trained" when alpha > 6, else "" (weightwatcher's
``warning`` column). Fewer than 2 eigenvalues above the threshold: no fit (weightwatcher
reports alpha = -1 and status "failed"; here the keys are absent).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EVALS_THRESH = 1e-5  # weightwatcher's EVALS_THRESH: smaller eigenvalues are left out of the fit
SMALL_N = 20  # weightwatcher's SMALL_N_CUTOFF: below this many, the small-N fit
SMALL_N_MIN_TAIL = 8  # fit_powerlaw_smallN's k_min
OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0  # weightwatcher's OVER_/UNDER_TRAINED_THRESH


def powerlaw_fit(ev: np.ndarray) -> dict[str, Any]:
    """weightwatcher's alpha and fit-quality numbers for eigenvalues ``ev`` (module docstring)."""
    ev = np.asarray(ev, dtype=np.float64)
    x = np.asarray(np.sort(ev[ev > EVALS_THRESH]), dtype=np.float64)
    if x.size < 2:
        return {}
    alphas, ds, sigmas = _fit_small_n(x) if x.size < SMALL_N else _fit_standard(x)
    i = int(np.argmin(ds))  # WWFit.__init__ picks the smallest D after either fit
    alpha, xmin = float(alphas[i]), float(x[i])
    warning = "over-trained" if alpha < OVER_TRAINED else "under-trained" if alpha > UNDER_TRAINED else ""
    return {"alpha": alpha, "alpha_xmin": xmin, "alpha_D": float(ds[i]), "alpha_tail": int((ev >= xmin).sum()),
            "alpha_sigma": float(sigmas[i]), "alpha_warning": warning}


Fit = tuple[np.ndarray, np.ndarray, np.ndarray]  # alpha, D and sigma per candidate xmin x[0..N-2]


def _fit_standard(x: np.ndarray) -> Fit:
    """WWFit.fit_power_law_standard."""
    n_all = x.size
    logs = np.log(x, dtype=np.float64)
    alphas = np.zeros(n_all - 1, dtype=np.float64)
    ds = np.ones(n_all - 1, dtype=np.float64)
    for i, xmin in enumerate(x[:-1]):
        n = float(n_all - i)
        alpha = 1 + n / (np.sum(logs[i:]) - n * logs[i])
        alphas[i] = alpha
        if alpha > 1:
            ds[i] = np.max(np.abs(1 - (x[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    return alphas, ds, (alphas - 1) / np.sqrt(n_all - np.arange(n_all - 1))


def _fit_small_n(x: np.ndarray) -> Fit:
    """WWFit.fit_powerlaw_smallN (k_min=8, no prior). Its own choice (by D - 0.868/sqrt(n)) is
    overridden by WWFit.__init__'s argmin of D, so only the arrays it fills matter."""
    n_all = x.size
    logs = np.log(x, dtype=np.float64)
    alphas = np.zeros(n_all - 1, dtype=np.float64)
    ds = np.ones(n_all - 1, dtype=np.float64)
    qualified = False
    for i, xmin in enumerate(x[:-1]):
        n_int = n_all - i
        if n_int < SMALL_N_MIN_TAIL:
            continue
        n = float(n_int)
        s = np.sum(logs[i:]) - n * logs[i]
        if s <= 1e-12:
            continue
        alphas[i] = alpha = 1.0 + (n - 1.0) / s
        if alpha <= 1.0:
            continue
        fit = 1.0 - (x[i:] / xmin) ** (1.0 - alpha)
        ds[i] = float(np.max(np.abs(np.arange(n_int, dtype=np.float64) / n - fit)))
        qualified = True
    sigmas = (alphas - 1.0) / np.sqrt(n_all - np.arange(n_all - 1))  # before the fallback, as there
    if not qualified:  # no tail of >= 8 qualified: the whole spectrum is the tail
        n = float(n_all)
        s = np.sum(logs) - n * logs[0]
        if s > 1e-12:
            alphas[0] = alpha = 1.0 + (n - 1.0) / s
            fit = 1.0 - (x / x[0]) ** (1.0 - alpha)
            ds[0] = float(np.max(np.abs(np.arange(n_all, dtype=np.float64) / n - fit)))
    return alphas, ds, sigmas
