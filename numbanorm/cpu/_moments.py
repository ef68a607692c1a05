"""Blocked Welford/Chan moments, shared by every CPU kernel.

For a block of b contiguous values with provisional mean m (sum(x)/b, or given; see below):

    d = sum(x - m),  q = sum((x - m)^2),  M2 = q - d*d/b

(the d term removes the rounding error of m). Blocks merge with Chan's formula

    delta = m_b - mean;  n' = n + n_b;  mean += delta*n_b/n';  M2 += M2_b + delta^2*n*n_b/n'

The first block is read twice (for m, then for d and q), the second time from L1, so memory is
read once; both loops are plain sums that vectorise. Every later block is shifted: m is the
running mean of the blocks before it, known in advance, and the block is read once. Its M2 then
has the rounding error of q, which grows with the block's distance o = d/b from m (q = b*(var_b +
o^2)), but that distance enters the total through Chan's delta^2*n*n_b/n' >= b*o^2/2 (n >= b
for every block after the first), so relative to the total M2 the error stays within twice an
own-mean block's. (batch_norm's column blocks also shift a chunk's first block by the mean of
other rows, where the bound is looser; there a test sends blocks that stray back for a second
read: cpu.channels._shift_ok.)

Within a block everything is in the data's dtype; for float32 data that is twice the SIMD width
of float64 and no conversions. x - m is exact where it matters (x near m, so
the large-mean case keeps its variance), the d term removes m's rounding error, and a block's
float32 sums carry ~1e-7 relative error (the DESIGN bound: "float32 at least"). Three cases are
redone in float64 instead: a float32 sum of x that overflows, a sum of squares that overflows
(|x - m| > 1.8e19), and a sum of squares so small that deviations may have underflowed
(mean square below TINY_MEAN_SQUARE; constant blocks, whose deviations are all 0, are exact and
kept). Block results and every merge are float64. float64 data whose squares overflow is rescaled
by an exact power of two and reduced again (the rare path in `moments`).

Those rare paths cost a fifth to a half of a kernel's compile time. The rows kernels compile
without them (`moments(..., redo=None)`: Numba prunes `redo is None` branches at compile time)
and mark the rows that need them, which a redo kernel compiled on first need computes with them
(cpu.rows.forward_redo): a cold first layer_norm went from 3.79 to 2.83 s (scripts/first_call.py).

Elementwise passes run wholly in the data's dtype too. The float64 mean is split (split_mean) into
mh, the mean rounded to the data's dtype, and lo = (mean - mh)*rstd, and x - mean becomes
(x - mh)*rstd - lo: x - mh is exact for x within a factor 2 of mh, and lo restores the part of the
mean that rounding dropped (0.03 at mean 1e6 in float32), so float32 y and dx stay within a few
float32 ulps of the float64 result even when |mean| >> std. lo must stay its own term: written
(x - mh) - lo, 'reassoc' may fold it into x - (mh + lo), which drops lo (measured 3e-5 errors).
On float64 data the same code is plain float64 with lo = 0.

16-bit data (float16, bfloat16: integer views, see numbanorm.cpu._half) takes the float32 code:
every read goes through ld (float32, exact), `like` and `work` give float32 for such arrays,
`narrow` is true, and results are stored through st (rounded once to 16 bits).
"""
import math
import types as pytypes

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

from .. import _chan
from .._config import BLOCK, JIT, TINY_MEAN_SQUARE
from ._half import bits_of, ld


def like(a, v):
    """v converted to the dtype array a computes in (its own, or float32 for a 16-bit array;
    see numbanorm.cpu._half), or to the type of scalar a (inside kernels: a cast, no
    allocation). Inside a loop pass a scalar: an array argument costs a reference count
    increment and decrement per call, which stops the loop vectorising (measured 3x slower
    column partials)."""
    if isinstance(a, np.ndarray):
        return (np.float32 if a.dtype.itemsize == 2 else a.dtype.type)(v)
    return type(a)(v)


def _compute_type(a):
    """The Numba type array type a computes in (float32 for 16-bit arrays)."""
    dtype = a.dtype if isinstance(a, types.Array) else a
    return types.float32 if isinstance(dtype, types.Integer) and dtype.bitwidth == 16 else dtype


@overload(like)
def _like(a, v):
    dtype = _compute_type(a)
    return lambda a, v: dtype(v)


def work(a, n):
    """An uninitialised 1-d array of n values of the dtype array a computes in (a's own, or
    float32 for a 16-bit array): scratch in the data's precision."""
    return np.empty(n, np.float32 if a.dtype.itemsize == 2 else a.dtype)


@overload(work)
def _work(a, n):
    dtype = _compute_type(a)
    return lambda a, n: np.empty(n, dtype)


def narrow(a):
    """True when array a's dtype is narrower than float64 (float32, or 16-bit: computed in
    float32)."""
    return a.dtype.itemsize < 8


@overload(narrow)
def _narrow(a):
    value = a.dtype.bitwidth < 64
    return lambda a: value


def at(w, j):
    """w[j] for an array w, w itself for a scalar: one elementwise loop serves per-element and
    per-channel parameters (Numba picks the form at compile time)."""
    return w[j] if isinstance(w, np.ndarray) else w


@overload(at)
def _at(w, j):
    if isinstance(w, types.Array):
        return lambda w, j: w[j]
    return lambda w, j: w


def part(w, b0, b1):
    """w[b0:b1] for an array w, w itself for a scalar (see `at`)."""
    return w[b0:b1] if isinstance(w, np.ndarray) else w


@overload(part)
def _part(w, b0, b1):
    if isinstance(w, types.Array):
        return lambda w, b0, b1: w[b0:b1]
    return lambda w, b0, b1: w


chan_merge = njit(**JIT)(_chan.chan_merge)


def valid(omit, v):
    """Whether the value v enters the statistics: always when omit is None (NaN propagates),
    else when v is not NaN (nan_policy='omit'). Chosen at compile time (an overload), so the
    propagating kernels carry no mask."""
    return True if omit is None else v == v


@overload(valid)
def _valid(omit, v):
    if isinstance(omit, (types.NoneType, types.Omitted)):
        return lambda omit, v: True
    return lambda omit, v: v == v


@njit(inline='always', **JIT)
def data_block(xb, omit, shift, shifted):
    """(n, centre, offset, M2) of the values of the 1-d block xb that enter the statistics (see
    valid), in float64 whatever xb's dtype: the block's mean is centre + offset, its M2 about
    that mean. Centred on its own mean (two reads, the second from L1), or when shifted on
    `shift` (one read): the data-normalization kernels centre a slot's first block on its own
    mean and every later block on that same centre, and merge the block means as offsets from
    it with chan_merge: the numbers merged are then of the data's spread, not its magnitude,
    and the rounding of a running mean of magnitude 1e4 no longer enters every later delta
    (float64 data with mean 1e4 and std 1e-3: M2 within 1e-15 instead of 3e-11 when each block
    was centred on the rounded running mean).
    float64 sums keep float32 data with mean 1e6 to ~1e-16 of its variance, and |x| ~ 1e30
    squares without overflow."""
    if not shifted:
        n = 0.0
        s = 0.0
        for i in range(xb.size):
            v = float(ld(xb[i]))
            ok = valid(omit, v)
            n += ok
            s += v if ok else 0.0
        if n == 0.0:
            return 0.0, 0.0, 0.0, 0.0
        shift = s / n
    n = 0.0
    d = 0.0
    q = 0.0
    for i in range(xb.size):
        v = float(ld(xb[i]))
        ok = valid(omit, v)
        t = v - shift if ok else 0.0
        n += ok
        d += t
        q += t * t
    if n == 0.0:
        return 0.0, 0.0, 0.0, 0.0
    dn = d / n
    return n, shift, dn, q - d * dn


def float_bits(x):
    """(the magnitude mask, the bits of +inf, the sign shift) of the values of x as the
    kernels compute with them (float32 for 16-bit x), integers of their width: for the order
    keys of data_range, taken of bits_of(x[i]). A Python stand-in for NUMBA_DISABLE_JIT."""
    if x.dtype.itemsize <= 4:
        return np.int32(0x7fffffff), np.int32(0x7f800000), np.int32(31)
    return np.int64(0x7fffffffffffffff), np.int64(0x7ff0000000000000), np.int64(63)


@overload(float_bits)
def _float_bits(x):
    if x.dtype.bitwidth <= 32:
        return lambda x: (np.int32(0x7fffffff), np.int32(0x7f800000), np.int32(31))
    return lambda x: (np.int64(0x7fffffffffffffff), np.int64(0x7ff0000000000000),
                      np.int64(63))


@njit(inline='always', **JIT)
def order_key(v, mag, shift):
    """The float with bits v as an integer that sorts like the float (negative floats' bits
    reversed): min and max become integer operations, which LLVM vectorises without
    assuming anything of NaN (a float compare-and-select chain it does not vectorise without
    'nnan', which numbanorm never sets). Its own inverse."""
    return v ^ ((v >> shift) & mag)


def bits_float(b):
    """The integer array b viewed as floats of its width (the inverse of float_bits)."""
    return b.view(np.float32 if b.dtype.itemsize == 4 else np.float64)


@overload(bits_float)
def _bits_float(b):
    if b.dtype.bitwidth == 32:
        return lambda b: b.view(np.float32)
    return lambda b: b.view(np.float64)


@njit(inline='always', **JIT)
def key_value(k, mag, shift, empty):
    """The float64 value of order key k, or `empty` where no value came (k at its start)."""
    b = np.empty(1, type(mag))
    b[0] = order_key(k, mag, shift)
    v = float(bits_float(b)[0])
    return empty if (k == mag or k == ~mag) else v


@njit(inline='always', **JIT)
def data_range(x):
    """(min, max, NaN count) of the 1-d array x, NaN ignored in min and max (+inf, -inf when
    no value counts), by order keys (order_key): one vectorised integer pass."""
    mag, inf_bits, shift = float_bits(x)
    big = mag
    small = ~mag
    lo = big
    hi = small
    nans = 0
    for i in range(x.size):
        v = bits_of(x[i])
        k = order_key(v, mag, shift)
        isnan = (v & mag) > inf_bits
        nans += isnan
        lo = min(lo, big if isnan else k)
        hi = max(hi, small if isnan else k)
    return key_value(lo, mag, shift, np.inf), key_value(hi, mag, shift, -np.inf), nans


def parallel_and_serial(jit):
    """Compile a kernel twice: parallel, and serially (prange runs as range) under the name
    SERIAL.<name> of its module (a namespace each kernel module defines), for inputs too small
    to pay for a parallel region (~1.5 us each, and batch_norm runs three). The twin's code
    object gets its own name: Numba names the on-disk cache file after the code object and its
    key omits `parallel`, so a twin sharing the code object would load the other's machine
    code."""
    def wrap(fn):
        name = fn.__name__ + "_serial"
        code = fn.__code__.replace(co_name=name, co_qualname=name)  # names the cache file
        twin = pytypes.FunctionType(code, fn.__globals__, name, fn.__defaults__,
                                    fn.__closure__)
        twin.__doc__ = fn.__doc__
        serial = njit(**jit)(twin)
        setattr(fn.__globals__["SERIAL"], fn.__name__, serial)
        fn.__globals__[twin.__name__] = serial  # callable from other kernels, e.g. small_*
        return njit(parallel=True, **jit)(fn)
    return wrap


@njit(**JIT)
def _term(v, inv):
    """v * inv, or v when inv is None: Numba compiles a None argument as its own type and
    prunes the branch, so the common unscaled kernels carry no multiply."""
    if inv is None:
        return v
    return v * inv


@njit(inline='always', **JIT)
def _constant(xb, v):
    """Whether every value of xb equals v."""
    for i in range(xb.size):
        if ld(xb[i]) != v:
            return False
    return True


@njit(inline='always', **JIT)
def _block(xb, centered, inv, shift, shifted, redo):
    """(mean, M2) of one block xb * inv (inv None: 1; see the module docstring). shifted: the
    provisional mean is `shift`, the running mean of the blocks before, and the block is read
    once instead of twice. redo None (see `moments`): a block that needs a float64 pass
    returns NaN instead, and the kernel compiles without those passes (`redo is None` is
    decided at compile time)."""
    nb = float(xb.size)
    if not centered:
        m2b = 0.0
        for i in range(xb.size):
            t = float(_term(ld(xb[i]), inv))
            m2b += t * t
        return 0.0, m2b
    if shifted:
        s = shift * nb
    else:
        sx = like(xb, 0.0)
        for i in range(xb.size):
            sx += _term(ld(xb[i]), inv)
        s = float(sx)
        if not np.isfinite(s):  # a float32 sum that overflowed (or non-finite data)
            if redo is None:
                return np.nan, np.nan
            s = 0.0
            for i in range(xb.size):
                s += _term(float(ld(xb[i])), inv)
    if inv is None:
        # In x's dtype: for float32 data twice the SIMD width of float64, and no conversions.
        # x - mbs is exact where it matters (x near mbs) and d removes mbs's rounding error.
        # A float32 sum of squares that overflowed (|x - mbs| > 1.8e19) or may have lost terms
        # to underflow (mean square below TINY_MEAN_SQUARE) is redone in float64 below, unless
        # the block is constant (every x == mbs: mean mbs, M2 0, exact). On float64 data this
        # is the float64 pass itself.
        mbs = like(xb, s / nb)
        ds = like(xb, 0.0)
        qs = like(xb, 0.0)
        for i in range(xb.size):
            t = ld(xb[i]) - mbs
            ds += t
            qs += t * t
        if not narrow(xb) or (np.isfinite(qs) and (qs >= nb * TINY_MEAN_SQUARE
                                                   or _constant(xb, mbs))):
            d = float(ds)
            dn = d / nb
            return float(mbs) + dn, float(qs) - d * dn
        if redo is None:
            return np.nan, np.nan
    mb = s / nb
    d = 0.0
    q = 0.0
    for i in range(xb.size):
        t = _term(float(ld(xb[i])), inv) - mb
        d += t
        q += t * t
    # d/nb is the distance of the block's mean from mb: add it to the mean, remove its square
    # from q.
    dn = d / nb
    return mb + dn, q - d * dn


@njit(inline='always', **JIT)
def block_moments(x, centered, inv, redo):
    """(mean, M2) of the 1-d array x * inv (inv None: unscaled); with centered False, mean is
    0 and M2 = sum(x^2). redo: see `moments`."""
    # Inner loops run 0-based over a block slice: Numba then knows the index is non-negative,
    # drops the wraparound check and LLVM vectorises (measured 8x faster than range(b0, b1)).
    # One _block call site (it is inlined: a second site doubled the kernels' compile time);
    # the first block initialises the triple, so a row of at most BLOCK values has no merge.
    # Every block after the first is shifted by the running mean (read once; see the module
    # docstring for why that needs no test of how far the block's mean strays).
    n = x.size
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for b0 in range(0, n, BLOCK):
        xb = x[b0:min(b0 + BLOCK, n)]
        mb, m2b = _block(xb, centered, inv, mean, b0 > 0, redo)
        if b0 == 0:
            count, mean, m2 = float(xb.size), mb, m2b
        else:
            count, mean, m2 = chan_merge(count, mean, m2, float(xb.size), mb, m2b)
    return mean, m2


@njit(inline='always', **JIT)
def moments(x, centered, redo):
    """Statistics of the 1-d array x as (mean, var_scaled, inv).

    The biased variance is var_scaled / inv**2 and rstd = inv / sqrt(var_scaled + eps*inv**2);
    inv is 1 except when the squares overflow float64 on finite data, where it is the exact
    power of two that brings max|x| below 1. Non-finite data returns NaN/inf statistics.

    redo True runs the rare paths where they are needed: a float32 block sum that overflows,
    a float32 block not exact enough (both redone in float64), squares that overflow float64
    (rescaled). redo None (the common kernels) compiles without them, a fifth to a half of a
    kernel's compile time, and returns inv = 0 instead: the caller marks the row, and the host
    computes the marked rows again with redo True (cpu.rows.forward_redo). Non-finite data is
    marked too, so the rare kernels compile only for data that needs them.
    """
    mean, m2 = block_moments(x, centered, None, redo)
    if np.isfinite(m2) and np.isfinite(mean):
        return mean, m2 / x.size, 1.0
    if redo is None:
        return mean, np.nan, 0.0
    return _rescaled_moments(x, centered, mean, m2)


@njit(**JIT)
def _rescaled_moments(x, centered, mean, m2):
    """`moments` when the first reduction was not finite: NaN/inf data keeps its non-finite
    statistics; finite data whose squares overflow is reduced again scaled by a power of 2."""
    biggest = 0.0
    for i in range(x.size):
        a = abs(ld(x[i]))
        if not np.isfinite(a):
            return mean, m2 / x.size, 1.0
        biggest = max(biggest, a)
    inv = math.ldexp(1.0, -math.frexp(biggest)[1])
    mean, m2 = block_moments(x, centered, inv, True)
    return mean / inv, m2 / x.size, inv


@njit(inline='always', **JIT)
def split_mean(scale, mean):
    """(mh, lo) in the type of the scalar scale: mh is the float64 mean rounded to that type
    and lo = (mean - mh)*scale, so that (x - mh)*scale - lo is (x - mean)*scale with every
    operation in x's dtype. x - mh is exact for x within a factor 2 of mh (where an error would
    matter: |mean| >> std), and lo carries the part of the mean that mh drops (up to half an
    ulp of the mean: 0.03 at mean 1e6 in float32). lo is its own term: folding it into mh
    again ((x - mh) - lo) would let 'reassoc' rewrite it as x - (mh + lo), which drops it."""
    mh = like(scale, mean)
    return mh, like(scale, (mean - mh) * scale)


@njit(inline='always', **JIT)
def _block_grad_sums(xs, ds, mh, rstd, lo, w):
    """(sum(g), sum(g*xhat)) over at most BLOCK values, g = dy*w (w an array or a scalar),
    xhat = (x - mh)*rstd - lo (see split_mean), summed in x's dtype, returned in float64."""
    sg = like(rstd, 0.0)
    sgx = like(rstd, 0.0)
    for j in range(xs.size):
        g = ld(ds[j]) * at(w, j)
        sg += g
        sgx += g * ((ld(xs[j]) - mh) * rstd - lo)
    return float(sg), float(sgx)


@njit(inline='always', **JIT)
def grad_sums(xs, ds, mh, rstd, lo, w):
    """(sum(g), sum(g*xhat)) of the backward passes over any length: blocks of BLOCK values
    summed in x's dtype (as the statistics), added in float64. With rstd = w = 1 and
    lo = mean - mh: (sum(dy), sum(dy*(x - mean)))."""
    sg = 0.0
    sgx = 0.0
    for b0 in range(0, xs.size, BLOCK):
        b1 = min(b0 + BLOCK, xs.size)
        a, b = _block_grad_sums(xs[b0:b1], ds[b0:b1], mh, rstd, lo, part(w, b0, b1))
        sg += a
        sgx += b
    return sg, sgx


@njit(**JIT)
def rstd_of(var_scaled, inv, eps):
    """1/sqrt(var + eps) for var = var_scaled / inv**2, without forming var."""
    return inv / math.sqrt(var_scaled + eps * inv * inv)


def borrowed(a):
    """The array a without a reference count of its own (a borrowed view; a must outlive it,
    as a kernel argument does). Views taken from it in a loop (rows, slices) then cost no
    atomic operations: Numba counts a view of a counted array up and down on the shared count
    of the parent, and when branches in the loop body stop its pruning from pairing them, the
    threads of a parallel kernel contend for that one cache line on every row. Never return
    one (or a view of one) from a kernel: Python would get an array that owns nothing. In
    pure Python (NUMBA_DISABLE_JIT=1) a itself."""
    return a


@overload(borrowed)
def _borrowed_overload(a):
    if isinstance(a, types.Array):
        return lambda a: _borrowed(a)


@intrinsic
def _borrowed(typingctx, a):
    sig = a(a)

    def codegen(context, builder, signature, args):
        ary = context.make_array(a)(context, builder, args[0])
        out = context.make_array(a)(context, builder)
        populate_array(out, data=ary.data, shape=ary.shape, strides=ary.strides,
                       itemsize=ary.itemsize, meminfo=None)
        return out._getvalue()
    return sig, codegen


@njit(inline='always', **JIT)
def power_sum(x, p, acc):
    """acc combined with the values of the 1-d block x in float64: acc + sum(|x|^p), or for
    p = inf max(acc, max |x|); NaN propagates in both. p = 2 and p = 1 take plain loops."""
    if p == 2.0:
        for i in range(x.size):
            v = float(ld(x[i]))
            acc += v * v
    elif p == 1.0:
        for i in range(x.size):
            acc += abs(float(ld(x[i])))
    elif p == np.inf:
        for i in range(x.size):
            v = abs(float(ld(x[i])))
            acc = v if (v > acc or v != v) else acc
    else:
        for i in range(x.size):
            acc += abs(float(ld(x[i]))) ** p
    return acc


@njit(inline='always', **JIT)
def power_combine(p, a, b):
    """Two partial results of power_sum as one: a + b, or max for p = inf (NaN propagates)."""
    if p == np.inf:
        return b if (b > a or b != b) else a
    return a + b
