"""Device functions shared by the CUDA kernels: Welford updates, Chan merges, and block-wide
reductions through shared memory in a fixed tree order (thread t merges t + stride, stride
halving), so a result depends on the data and CUDA_THREADS only, never on timing.

All accumulation is in float64 for both dtypes, as on the CPU. Shared-memory trees are used
rather than warp shuffles because Numba's CUDA simulator, which runs these kernels in CI, has
no shuffles.
"""
import math

from numba import cuda

from .. import _chan
from .._config import CUDA_THREADS

THREADS = CUDA_THREADS


chan_merge = cuda.jit(device=True, inline=True)(_chan.chan_merge)


@cuda.jit(device=True, inline=True)
def welford(n, mean, m2, v):
    n += 1.0
    d = v - mean
    mean += d / n
    return n, mean, m2 + d * (v - mean)


@cuda.jit(device=True)
def group_merge(sn, smean, sm2, n, mean, m2, width):
    """Chan-merge the triples of each group of `width` consecutive threads (a power of two
    that divides THREADS; THREADS: the whole block); every thread gets its group's triple. Every
    thread of the block must call it (it synchronises the block)."""
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    sn[t] = n
    smean[t] = mean
    sm2[t] = m2
    cuda.syncthreads()
    stride = width // 2
    while stride > 0:
        if lane < stride:
            a, b, c = chan_merge(sn[t], smean[t], sm2[t], sn[t + stride], smean[t + stride],
                                 sm2[t + stride])
            sn[t] = a
            smean[t] = b
            sm2[t] = c
        cuda.syncthreads()
        stride //= 2
    base = t - lane
    n = sn[base]
    mean = smean[base]
    m2 = sm2[base]
    cuda.syncthreads()  # the shared arrays are free again once everyone has read them
    return n, mean, m2


@cuda.jit(device=True)
def block_merge(sn, smean, sm2, n, mean, m2):
    """Chan-merge every thread's triple; all threads get the block's triple."""
    return group_merge(sn, smean, sm2, n, mean, m2, THREADS)


@cuda.jit(device=True)
def group_sum2(sa, sb, a, b, width):
    """Sums of two values over each group of `width` consecutive threads (see group_merge), in
    a fixed tree order; every thread gets its group's sums."""
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    sa[t] = a
    sb[t] = b
    cuda.syncthreads()
    stride = width // 2
    while stride > 0:
        if lane < stride:
            sa[t] += sa[t + stride]
            sb[t] += sb[t + stride]
        cuda.syncthreads()
        stride //= 2
    base = t - lane
    a = sa[base]
    b = sb[base]
    cuda.syncthreads()
    return a, b


@cuda.jit(device=True)
def block_sum2(sa, sb, a, b):
    """Block-wide sums of two values, in a fixed tree order; all threads get both sums."""
    return group_sum2(sa, sb, a, b, THREADS)


@cuda.jit(device=True)
def group_max(sa, a, width):
    """Maximum over each group of `width` consecutive threads (NaN-propagating; see
    group_merge); every thread gets its group's."""
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    sa[t] = a
    cuda.syncthreads()
    stride = width // 2
    while stride > 0:
        if lane < stride:
            other = sa[t + stride]
            if other > sa[t] or math.isnan(other):
                sa[t] = other
        cuda.syncthreads()
        stride //= 2
    a = sa[t - lane]
    cuda.syncthreads()
    return a


@cuda.jit(device=True)
def block_max(sa, a):
    """Block-wide maximum (NaN-propagating); all threads get it."""
    return group_max(sa, a, THREADS)


@cuda.jit(device=True, inline=True)
def power_of_two_below(biggest):
    """An exact power of two s with biggest*s in [0.5, 1): scaling by it is exact and keeps
    squares of |x| ~ 1e300 finite."""
    _, e = math.frexp(biggest)
    return math.ldexp(1.0, -e)
