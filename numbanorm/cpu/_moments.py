"""Blocked Welford/Chan moments, shared by every CPU kernel.

For a block of b contiguous values with provisional mean m = sum(x)/b:

    d = sum(x - m),  q = sum((x - m)^2),  M2 = q - d*d/b

(the d term removes the rounding error of m). Blocks merge with Chan's formula

    delta = m_b - mean;  n' = n + n_b;  mean += delta*n_b/n';  M2 += M2_b + delta^2*n*n_b/n'

Each block is read twice, the second time from L1, so memory is read once; both loops are plain
sums that vectorise. Accumulation is in float64 for every input dtype: float32 data with
|x| up to its maximum (~3e38) squares without overflow. float64 data whose squares overflow is
rescaled by an exact power of two and reduced again (the rare path in `moments`).
"""
import math

import numpy as np
from numba import njit

from .._config import BLOCK, JIT


@njit(**JIT)
def chan_merge(n, mean, m2, nb, mb, m2b):
    """Merge the triple (nb, mb, m2b) into (n, mean, m2); either may be empty."""
    if nb == 0:
        return n, mean, m2
    if n == 0:
        return nb, mb, m2b
    nn = n + nb
    delta = mb - mean
    return nn, mean + delta * (nb / nn), m2 + m2b + delta * delta * (n * nb / nn)


@njit(**JIT)
def block_moments(x, start, stop, centered, inv):
    """(mean, M2) of x[start:stop] * inv; with centered False, mean is 0 and M2 = sum(x^2)."""
    # Inner loops run 0-based over a block slice: Numba then knows the index is non-negative,
    # drops the wraparound check and LLVM vectorises (measured 8x faster than range(b0, b1)).
    n = 0.0
    mean = 0.0
    m2 = 0.0
    for b0 in range(start, stop, BLOCK):
        xb = x[b0:min(b0 + BLOCK, stop)]
        nb = float(xb.size)
        if centered:
            s = 0.0
            for i in range(xb.size):
                s += xb[i] * inv
            mb = s / nb
            d = 0.0
            q = 0.0
            for i in range(xb.size):
                t = xb[i] * inv - mb
                d += t
                q += t * t
            m2b = q - d * d / nb
        else:
            mb = 0.0
            m2b = 0.0
            for i in range(xb.size):
                t = xb[i] * inv
                m2b += t * t
        n, mean, m2 = chan_merge(n, mean, m2, nb, mb, m2b)
    return mean, m2


@njit(**JIT)
def moments(x, start, stop, centered):
    """Statistics of x[start:stop] as (mean, var_scaled, inv).

    The biased variance is var_scaled / inv**2 and rstd = inv / sqrt(var_scaled + eps*inv**2);
    inv is 1 except when the squares overflow float64 on finite data, where it is the exact
    power of two that brings max|x| below 1. Non-finite data returns NaN/inf statistics.
    """
    n = stop - start
    mean, m2 = block_moments(x, start, stop, centered, 1.0)
    if n == 0 or (np.isfinite(m2) and np.isfinite(mean)):
        return mean, m2 / n, 1.0
    biggest = 0.0
    xs = x[start:stop]
    for i in range(xs.size):
        a = abs(xs[i])
        if not np.isfinite(a):
            return mean, m2 / n, 1.0
        biggest = max(biggest, a)
    inv = math.ldexp(1.0, -math.frexp(biggest)[1])
    mean, m2 = block_moments(x, start, stop, centered, inv)
    return mean / inv, m2 / n, inv


@njit(**JIT)
def rstd_of(var_scaled, inv, eps):
    """1/sqrt(var + eps) for var = var_scaled / inv**2, without forming var."""
    return inv / math.sqrt(var_scaled + eps * inv * inv)
