"""Device functions shared by the CUDA kernels: Welford updates, Chan merges, and reductions
over groups of consecutive threads in a fixed tree order (thread t merges t + stride, stride
halving), so a result depends on the data and CUDA_THREADS only, never on timing.

The strides of a warp or more go through shared memory; the last ones (16, 8, 4, 2, 1) stay in
the warp: each lane takes its partner's values with a shuffle (shfl_down_sync), no shared memory
and no block barrier, and the group's result goes to all its lanes with one more (shfl_sync). The
pairs and their order are those of the shared-memory tree, so results are the same bits either
way.

Numba's CUDA simulator, which runs these kernels in CI, has no shuffles: under it `_down*` and
`_from*` exchange the values through the shared arrays the caller passes, with the semantics of
the intrinsics (a lane past the end of the warp, or of a block smaller than a warp, keeps its
own value), so the simulator runs the same reduction code.

All accumulation is in float64 for every dtype, as on the CPU. Values are read through `ld`
(float64 of any stored dtype: float16, bfloat16, float32, float64), and results stored by the
array's own conversion of the float64 value (one rounding to 16 bits, to nearest even).
"""
import math

from numba import config, cuda, float32, float64

from .. import _chan
from .._config import CUDA_THREADS

THREADS = CUDA_THREADS
WARP = 32
# The lanes a block's warps hold: all 32, or the whole block when it is smaller than a warp
# (a shuffle's mask names only lanes that exist).
_LANES = min(THREADS, WARP)
_MASK = (1 << _LANES) - 1


chan_merge = cuda.jit(device=True, inline=True)(_chan.chan_merge)


def ld(v):
    """The float64 value of an array element of any of numbanorm's dtypes. The simulator runs
    this as Python (NumPy's and ml_dtypes' conversions); on a GPU it is the overload below."""
    return float64(v)


if not config.ENABLE_CUDASIM:
    from numba.cuda.extending import overload
    from numba.cuda.types import bfloat16

    @overload(ld, target="cuda")
    def _ld(v):
        # numba-cuda (its bfloat16 type: ml_dtypes.bfloat16 arrays) converts bfloat16 to
        # float32 only; float32 holds every bfloat16 value exactly
        if v == bfloat16:
            return lambda v: float64(float32(v))
        return lambda v: float64(v)


@cuda.jit(device=True, inline=True)
def welford(n, mean, m2, v):
    n += 1.0
    d = v - mean
    mean += d / n
    return n, mean, m2 + d * (v - mean)


if config.ENABLE_CUDASIM:
    # Shared-memory stand-ins for the shuffles, one or more values per exchange (the simulator
    # is slow at block barriers: one pair of them per exchange, not per value). Every thread
    # of the block must call them; s, s2, s3 are free shared arrays of THREADS values.

    @cuda.jit(device=True)
    def _partner(t, delta):
        """The thread whose value lane t's shfl_down takes: t + delta within the warp (and the
        block), else t itself."""
        if (t & (WARP - 1)) + delta < _LANES and t + delta < THREADS:
            return t + delta
        return t

    @cuda.jit(device=True)
    def _down(s, v, delta):
        t = cuda.threadIdx.x
        s[t] = v
        cuda.syncthreads()
        v = s[_partner(t, delta)]
        cuda.syncthreads()
        return v

    @cuda.jit(device=True)
    def _down2(s, s2, v, v2, delta):
        t = cuda.threadIdx.x
        s[t] = v
        s2[t] = v2
        cuda.syncthreads()
        u = _partner(t, delta)
        v = s[u]
        v2 = s2[u]
        cuda.syncthreads()
        return v, v2

    @cuda.jit(device=True)
    def _down3(s, s2, s3, v, v2, v3, delta):
        t = cuda.threadIdx.x
        s[t] = v
        s2[t] = v2
        s3[t] = v3
        cuda.syncthreads()
        u = _partner(t, delta)
        v = s[u]
        v2 = s2[u]
        v3 = s3[u]
        cuda.syncthreads()
        return v, v2, v3

    @cuda.jit(device=True)
    def _from(s, v, src):
        """v of lane src of this warp (shfl_sync)."""
        return _down(s, v, src - (cuda.threadIdx.x & (WARP - 1)))

    @cuda.jit(device=True)
    def _from2(s, s2, v, v2, src):
        return _down2(s, s2, v, v2, src - (cuda.threadIdx.x & (WARP - 1)))

    @cuda.jit(device=True)
    def _from3(s, s2, s3, v, v2, v3, src):
        return _down3(s, s2, s3, v, v2, v3, src - (cuda.threadIdx.x & (WARP - 1)))
else:
    @cuda.jit(device=True, inline=True)
    def _down(s, v, delta):
        return cuda.shfl_down_sync(_MASK, v, delta)

    @cuda.jit(device=True, inline=True)
    def _down2(s, s2, v, v2, delta):
        return cuda.shfl_down_sync(_MASK, v, delta), cuda.shfl_down_sync(_MASK, v2, delta)

    @cuda.jit(device=True, inline=True)
    def _down3(s, s2, s3, v, v2, v3, delta):
        return (cuda.shfl_down_sync(_MASK, v, delta), cuda.shfl_down_sync(_MASK, v2, delta),
                cuda.shfl_down_sync(_MASK, v3, delta))

    @cuda.jit(device=True, inline=True)
    def _from(s, v, src):
        return cuda.shfl_sync(_MASK, v, src)

    @cuda.jit(device=True, inline=True)
    def _from2(s, s2, v, v2, src):
        return cuda.shfl_sync(_MASK, v, src), cuda.shfl_sync(_MASK, v2, src)

    @cuda.jit(device=True, inline=True)
    def _from3(s, s2, s3, v, v2, v3, src):
        return (cuda.shfl_sync(_MASK, v, src), cuda.shfl_sync(_MASK, v2, src),
                cuda.shfl_sync(_MASK, v3, src))


@cuda.jit(device=True)
def group_merge(sn, smean, sm2, n, mean, m2, width):
    """Chan-merge the triples of each group of `width` consecutive threads (a power of two
    that divides THREADS; THREADS: the whole block); every thread gets its group's triple. Every
    thread of the block must call it (it synchronises the block)."""
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    stride = width // 2
    if width > WARP:  # the strides of a warp or more, through shared memory
        sn[t] = n
        smean[t] = mean
        sm2[t] = m2
        cuda.syncthreads()
        while stride >= WARP:
            if lane < stride:
                a, b, c = chan_merge(sn[t], smean[t], sm2[t], sn[t + stride], smean[t + stride],
                                     sm2[t + stride])
                sn[t] = a
                smean[t] = b
                sm2[t] = c
            cuda.syncthreads()
            stride //= 2
        n = sn[t]
        mean = smean[t]
        m2 = sm2[t]
        cuda.syncthreads()  # the shared arrays are free again once everyone has read them
    while stride > 0:  # the last strides, within the warp
        n2, mean2, m22 = _down3(sn, smean, sm2, n, mean, m2, stride)
        if lane < stride:
            n, mean, m2 = chan_merge(n, mean, m2, n2, mean2, m22)
        stride //= 2
    if width > WARP:  # lane 0 of the group holds the result: to every lane
        if lane == 0:
            sn[t] = n
            smean[t] = mean
            sm2[t] = m2
        cuda.syncthreads()
        base = t - lane
        n = sn[base]
        mean = smean[base]
        m2 = sm2[base]
        cuda.syncthreads()
    else:
        n, mean, m2 = _from3(sn, smean, sm2, n, mean, m2, (t & (WARP - 1)) - lane)
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
    stride = width // 2
    if width > WARP:
        sa[t] = a
        sb[t] = b
        cuda.syncthreads()
        while stride >= WARP:
            if lane < stride:
                sa[t] += sa[t + stride]
                sb[t] += sb[t + stride]
            cuda.syncthreads()
            stride //= 2
        a = sa[t]
        b = sb[t]
        cuda.syncthreads()
    while stride > 0:
        a2, b2 = _down2(sa, sb, a, b, stride)
        if lane < stride:
            a += a2
            b += b2
        stride //= 2
    if width > WARP:
        if lane == 0:
            sa[t] = a
            sb[t] = b
        cuda.syncthreads()
        a = sa[t - lane]
        b = sb[t - lane]
        cuda.syncthreads()
    else:
        a, b = _from2(sa, sb, a, b, (t & (WARP - 1)) - lane)
    return a, b


@cuda.jit(device=True)
def block_sum2(sa, sb, a, b):
    """Block-wide sums of two values, in a fixed tree order; all threads get both sums."""
    return group_sum2(sa, sb, a, b, THREADS)


@cuda.jit(device=True, inline=True)
def _max(a, other):
    """max(a, other), NaN-propagating (either NaN gives NaN)."""
    return other if other > a or math.isnan(other) else a


@cuda.jit(device=True)
def group_max(sa, a, width):
    """Maximum over each group of `width` consecutive threads (NaN-propagating; see
    group_merge); every thread gets its group's."""
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    stride = width // 2
    if width > WARP:
        sa[t] = a
        cuda.syncthreads()
        while stride >= WARP:
            if lane < stride:
                sa[t] = _max(sa[t], sa[t + stride])
            cuda.syncthreads()
            stride //= 2
        a = sa[t]
        cuda.syncthreads()
    while stride > 0:
        other = _down(sa, a, stride)
        if lane < stride:
            a = _max(a, other)
        stride //= 2
    if width > WARP:
        if lane == 0:
            sa[t] = a
        cuda.syncthreads()
        a = sa[t - lane]
        cuda.syncthreads()
    else:
        a = _from(sa, a, (t & (WARP - 1)) - lane)
    return a


@cuda.jit(device=True)
def block_max(sa, a):
    """Block-wide maximum (NaN-propagating); all threads get it."""
    return group_max(sa, a, THREADS)


@cuda.jit(device=True, inline=True)
def data_update(cnt, mean, m2, lo, hi, nans, v, omit):
    """The data statistics with one more value v: Welford over the values that enter (every
    value; omit: the non-NaN ones), min and max of the non-NaN ones, the NaN count."""
    if math.isnan(v):
        nans += 1.0
        if omit:
            return cnt, mean, m2, lo, hi, nans
    else:
        lo = min(lo, v)
        hi = max(hi, v)
    cnt, mean, m2 = welford(cnt, mean, m2, v)
    return cnt, mean, m2, lo, hi, nans


@cuda.jit(device=True, inline=True)
def power_add(acc, a, power):
    """acc plus a^power for a >= 0 (power = inf: max(acc, a), NaN-propagating)."""
    if power == math.inf:
        return a if a > acc or math.isnan(a) else acc
    if power == 2.0:
        return acc + a * a
    if power == 1.0:
        return acc + a
    return acc + a ** power


@cuda.jit(device=True, inline=True)
def power_of_two_below(biggest):
    """An exact power of two s with biggest*s in [0.5, 1): scaling by it is exact and keeps
    squares of |x| ~ 1e300 finite."""
    _, e = math.frexp(biggest)
    return math.ldexp(1.0, -e)


@cuda.jit(device=True, inline=True)
def grad_terms(op, v, g, q0, q1, q3, c0, c1):
    """One element's four terms of the data backward passes' per-slot sums, for x = v and
    dy = g (numbanorm.cuda._host.data_backward gives the slot's parameters q and the scalars c):

        op 0, zscore        (g, g*y, 0, 0), y = (v - mean q0)*inv_std q1; nothing for a NaN
                            v when c0 (nan_policy='omit')
        op 1, minmax_scale  (g, g*t, [v == min q0], [v == max q1]), t = (v - min)/(max - min)
                            (0 where the range counts as zero, q3); nothing for a NaN v
        op 2, normalize     (g*v, [|v| == norm q0 or v is NaN] when c1 = p = inf, 0, 0)
    """
    if op == 0:
        if c0 != 0.0 and math.isnan(v):
            return 0.0, 0.0, 0.0, 0.0
        return g, g * ((v - q0) * q1), 0.0, 0.0
    if op == 1:
        if math.isnan(v):
            return 0.0, 0.0, 0.0, 0.0
        t = 0.0 if q3 != 0.0 else (v - q0) / (q1 - q0)
        return g, g * t, 1.0 if v == q0 else 0.0, 1.0 if v == q1 else 0.0
    mask = 0.0
    if c1 == math.inf and (abs(v) == q0 or math.isnan(v)):
        mask = 1.0
    return g * v, mask, 0.0, 0.0
