"""Chan's merge of two (count, mean, M2) triples: the one formula every reduction of numbanorm
ends in, on the CPU and on the GPU. Plain Python here; cpu/_moments compiles it with njit and
cuda/_reduce as a CUDA device function, so both backends merge with the same arithmetic.
merge_arrays is the same merge elementwise over NumPy (or Dask) arrays: Moments and the Dask
backend's records; merge_groups merges K triples along an axis at once (the adaptive ops' LN and
BN statistics from the per-(n, c) ones). lp_norms is the host arithmetic both backends' norms
end in, and rescaled_norms its rare rescaling path for a host that hands out a slot's values."""
import math

import numpy as np

# below this a sum of |x|^p may have lost terms to underflow (2^52 subnormal steps)
TINY_POWER_SUM = np.finfo(np.float64).tiny * 2.0 ** 52


def chan_merge(n, mean, m2, nb, mb, m2b):
    """Merge the triple (nb, mb, m2b) into (n, mean, m2); either may be empty."""
    if nb == 0:
        return n, mean, m2
    if n == 0:
        return nb, mb, m2b
    nn = n + nb
    delta = mb - mean
    return nn, mean + delta * (nb / nn), m2 + m2b + delta * delta * (n * nb / nn)


def merge_arrays(na, ma, qa, nb, mb, qb):
    """Chan's merge, elementwise over arrays; an empty side gives the other exactly."""
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(n > 0, n, 1.0)
        delta = mb - ma
        mean = ma + delta * (nb / safe)
        m2 = qa + qb + delta * delta * (na * nb / safe)
    mean = np.where(nb == 0, ma, np.where(na == 0, mb, mean))
    m2 = np.where(nb == 0, qa, np.where(na == 0, qb, m2))
    return n, mean, m2


def merge_groups(count, mean, m2, axis):
    """Chan's merge of the K triples along `axis` of NumPy arrays at once (keepdims): n = sum
    n_k, mean = sum(n_k*mean_k)/n, M2 = sum M2_k + sum n_k*(mean_k - mean)^2, the deviations
    taken from the merged mean once it is known (two passes over the K means: no cancellation,
    as merge_arrays' pairwise form, and one vectorised step instead of log2(K))."""
    n = count.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = (count * mean).sum(axis=axis, keepdims=True) / n
        d = mean - merged
        q = m2.sum(axis=axis, keepdims=True) + (count * d * d).sum(axis=axis, keepdims=True)
    return n, merged, q


def lp_norms(power_sums, p, rescaled):
    """Per-slot float64 Lp norms from power_sums(p) (per-slot sums of |x|^p; for p = inf the
    max |x|). Slots whose sums overflowed, or fell to where terms may have underflowed, on
    finite nonzero data (rare: float64 |x| beyond ~1e154 or below ~1e-146 for p = 2) are
    computed again by rescaled(redo, big): their norms, summed with x scaled by its max |x|
    (big), at the slots where redo is True."""
    s = power_sums(p)
    if p == math.inf:
        return s
    with np.errstate(over="ignore"):
        norm = np.sqrt(s) if p == 2.0 else (s if p == 1.0 else s ** (1.0 / p))
    bad = ~((s > TINY_POWER_SUM) & (s < math.inf)) & ~np.isnan(s)
    if bad.any():
        big = power_sums(math.inf)
        redo = bad & (big > 0) & (big < math.inf)
        if redo.any():
            norm = np.where(redo, rescaled(redo, big), norm)
    return norm


def rescaled_norms(values, p, redo, big):
    """lp_norms' rescaled for a host that can hand out one slot's values (values(slot), any
    float dtype): the Lp norms of the slots where redo is True, the values scaled by their max
    |x| (big[slot]) and summed in float64; 0 elsewhere."""
    norm = np.zeros(redo.size)
    for slot in np.flatnonzero(redo):
        v = np.abs(values(slot).astype(np.float64)) / big[slot]
        norm[slot] = big[slot] * (np.sqrt(np.dot(v, v)) if p == 2.0
                                  else np.sum(v ** p) ** (1.0 / p))
    return norm
