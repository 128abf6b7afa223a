"""The one-sided Kolmogorov-Smirnov tail ``scipy.special.smirnov(n, x)``, vectorised, for large n.

``ks_2samp(method="auto")`` on big samples gives ``kstwo.sf(D, n)`` with ``n = round(n1*n2/(n1+n2))``;
when ``2.2 <= n*D**2 < 370`` (p-values from about 0.02 down to 1e-160 and below) scipy evaluates it as
``2 * smirnov(n, D)``, and for ``n <= 1,000,000`` smirnov sums the Birnbaum-Tingey series term by term
in scalar C: about 0.6 s at n = 444,444 (the drift benchmark's size), holding the GIL. A drifted
feature of a large dataset lands there, so this one call took a third of a drift check.

The series is the same here, evaluated in numpy:

    smirnov(n, x) = P(D+_n >= x) = x * sum_{j=0}^{floor(n(1-x))} Binom(j; n, p_j) / p_j,   p_j = x + j/n

with each binomial probability computed by Loader's saddle-point form (the one R's ``dbinom`` uses):
``exp(stirlerr(n) - stirlerr(j) - stirlerr(n-j) - bd0(j, n p_j) - bd0(n-j, n q_j)) / sqrt(2 pi j (n-j)/n)``,
where ``bd0`` is evaluated from the exact difference ``j - n p_j = -n x`` so nothing cancels. Measured
against scipy on random (n, n x^2) over the range used: relative difference <= 1e-13 (typically 1e-15),
well inside the 1e-12 that the drift check promises; ``tests/test_drift.py`` checks it.

Outside the range where it was checked (n < FAST_MIN_N, n > FAST_MAX_N, or n x^2 outside
[2.2, FAST_MAX_NX2)) callers use scipy itself.
"""

from __future__ import annotations

import math

import numpy as np

FAST_MIN_N = 20_000  # below this scipy's own loop is quick anyway
FAST_MAX_N = 1_000_000  # above this scipy switches to an asymptotic formula; so must we (we call scipy)
FAST_MAX_NX2 = 300.0  # beyond this p < 1e-260: near the denormals, where relative agreement means little
_CHUNK = 1 << 16
_LOG_2PI = math.log(2 * math.pi)
_S0, _S1, _S2, _S3, _S4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188


def in_fast_range(n: int, x: float) -> bool:
    """Where `smirnov` below is used for ``kstwo.sf``'s ``2 * smirnov(n, x)`` branch."""
    return FAST_MIN_N <= n <= FAST_MAX_N and 0.0 < x < 0.5 and 2.2 <= n * x * x < FAST_MAX_NX2


def _stirlerr(k: np.ndarray) -> np.ndarray:
    """log(k!) - log(sqrt(2 pi k) (k/e)^k) for k >= 1 (Stirling's series above 15, as Loader)."""
    from scipy.special import gammaln

    out = np.empty_like(k)
    small = k <= 15
    if small.any():
        ks = k[small]
        out[small] = gammaln(ks + 1) - (ks + 0.5) * np.log(ks) + ks - 0.5 * _LOG_2PI
    big = ~small
    kb = k[big]
    kk = kb * kb
    out[big] = np.where(
        kb > 500, (_S0 - _S1 / kk) / kb,
        np.where(kb > 80, (_S0 - (_S1 - _S2 / kk) / kk) / kb,
                 np.where(kb > 35, (_S0 - (_S1 - (_S2 - _S3 / kk) / kk) / kk) / kb,
                          (_S0 - (_S1 - (_S2 - (_S3 - _S4 / kk) / kk) / kk) / kk) / kb)))
    return out


def _bd0(x: np.ndarray, delta: float) -> np.ndarray:
    """``x log(x/m) + m - x`` for ``m = x - delta`` (the binomial deviance), without cancellation."""
    m = x - delta
    out = np.empty_like(x)
    near = np.abs(delta) < 0.1 * (x + m)
    far = ~near
    xf = x[far]
    out[far] = -xf * np.log1p(-delta / xf) - delta
    xn, mn = x[near], m[near]
    v = delta / (xn + mn)
    s = delta * v
    ej = 2 * xn * v
    v2 = v * v
    for k in range(1, 200):  # |v| < 0.1: each term is 100x smaller, so ~10 rounds
        ej = ej * v2
        s1 = s + ej / (2 * k + 1)
        if np.array_equal(s1, s):
            break
        s = s1
    out[near] = s
    return out


def smirnov(n: int, x: float) -> float:
    """``scipy.special.smirnov(n, x)`` for ``in_fast_range(n, x)`` (relative difference <= ~1e-13)."""
    if not in_fast_range(n, x):
        raise ValueError(f"smirnov fast path is only for n in [{FAST_MIN_N}, {FAST_MAX_N}] and "
                         f"2.2 <= n x^2 < {FAST_MAX_NX2}, got n={n}, x={x}")
    nf = float(n)
    nx = nf * x
    jmax = math.floor(nf - nx)
    head = math.exp(nf * math.log1p(-x)) / x  # j = 0: (1-x)^n / p_0
    st_n = _stirlerr(np.array([nf]))[0]
    total = 0.0
    for start in range(1, jmax + 1, _CHUNK):
        j = np.arange(start, min(start + _CHUNK, jmax + 1), dtype=np.float64)
        nj = nf - j
        j, nj = j[nj > nx], nj[nj > nx]  # p_j < 1 (at p_j = 1 the term is 0)
        if j.size == 0:
            continue
        log_pmf = (st_n - _stirlerr(j) - _stirlerr(nj) - _bd0(j, -nx) - _bd0(nj, nx)
                   - 0.5 * (_LOG_2PI + np.log(j) + np.log1p(-j / nf)))
        total += float((np.exp(log_pmf) / (x + j / nf)).sum())
    return x * (head + total)
