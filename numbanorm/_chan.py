"""Chan's merge of two (count, mean, M2) triples: the one formula every reduction of numbanorm
ends in, on the CPU and on the GPU. Plain Python here; cpu/_moments compiles it with njit and
cuda/_reduce as a CUDA device function, so both backends merge with the same arithmetic. merge_arrays is the same merge elementwise
over NumPy (or Dask) arrays: Moments and the Dask backend's records."""
import numpy as np


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
