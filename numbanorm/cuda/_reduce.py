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
def block_merge(sn, smean, sm2, n, mean, m2):
    """Chan-merge every thread's triple; all threads get the block's triple."""
    t = cuda.threadIdx.x
    sn[t] = n
    smean[t] = mean
    sm2[t] = m2
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            a, b, c = chan_merge(sn[t], smean[t], sm2[t], sn[t + stride], smean[t + stride],
                                 sm2[t + stride])
            sn[t] = a
            smean[t] = b
            sm2[t] = c
        cuda.syncthreads()
        stride //= 2
    n = sn[0]
    mean = smean[0]
    m2 = sm2[0]
    cuda.syncthreads()  # the shared arrays are free again once everyone has read them
    return n, mean, m2


@cuda.jit(device=True)
def block_sum2(sa, sb, a, b):
    """Block-wide sums of two values, in a fixed tree order; all threads get both sums."""
    t = cuda.threadIdx.x
    sa[t] = a
    sb[t] = b
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            sa[t] += sa[t + stride]
            sb[t] += sb[t + stride]
        cuda.syncthreads()
        stride //= 2
    a = sa[0]
    b = sb[0]
    cuda.syncthreads()
    return a, b


@cuda.jit(device=True)
def block_max(sa, a):
    """Block-wide maximum (NaN-propagating); all threads get it."""
    t = cuda.threadIdx.x
    sa[t] = a
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            other = sa[t + stride]
            if other > sa[t] or math.isnan(other):
                sa[t] = other
        cuda.syncthreads()
        stride //= 2
    a = sa[0]
    cuda.syncthreads()
    return a


@cuda.jit(device=True, inline=True)
def power_of_two_below(biggest):
    """An exact power of two s with biggest*s in [0.5, 1): scaling by it is exact and keeps
    squares of |x| ~ 1e300 finite."""
    _, e = math.frexp(biggest)
    return math.ldexp(1.0, -e)
