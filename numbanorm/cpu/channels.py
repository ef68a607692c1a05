"""Channels geometry: batch_norm.

x is viewed as (N, C, S); channel c's statistics run over N*S values that are N strided slabs
of S contiguous values. Two layouts of the same reduction:

- slabs (S >= SLAB_MIN; see functional._slabs for the backward's threshold and for wide rows
  of short slabs): work item (k, g) reduces a run g of consecutive channels over the k-th chunk
  of the batch, slab by slab in memory order, with blocked Welford/Chan; x is passed as
  (N*C, S).
- columns (shorter slabs, including (N, C) input): x is an (N, M = C*S) matrix; chunk k reduces
  a run of rows block by block, vectorised across the columns, into per-column partial
  triples; the statistics cut rows wider than COLUMN_STRIP_BYTES into strips, one work item
  per (chunk, strip).

Either way the partials (K chunks, fixed by the shape) merge with Chan's formula in a fixed
order, so results do not depend on the thread count. The elementwise passes are

    forward:   y  = (x - mean[c])*a[c] + b[c]              a = rstd*w, b = bias
    backward:  dx = k1[c]*((dy - mean_dy[c]) - xhat*mean_dyx[c])   xhat = (x - mean[c])*rstd[c]
               (k1 = w*rstd; training: mean_dy = db/n, mean_dyx = dw/n; eval: both 0)
               No k1*rstd constant is formed: it underflows for float64 |x| ~ 1e300.
    with dw[c] = rstd*sum(dy*(x - mean)), db[c] = sum(dy) from slab_backward or
    column_sums.
"""
import types

import numpy as np
from numba import njit, prange
from numba import types as types_
from numba.extending import overload

from .._config import COLUMN_SHIFT_MAX, ELEMENTWISE_JIT, JIT, MERGE_JIT, TINY_MEAN_SQUARE
from ._half import bits_of, ld, st
from ._moments import (_constant, _term, at, block_moments, borrowed, chan_merge,
                       float_bits, grad_sums, key_value, like, narrow, order_key, part,
                       power_combine, rstd_of, split_mean, valid, work)
from ._moments import parallel_and_serial as _parallel_and_serial

SERIAL = types.SimpleNamespace()  # the serial twins (see _moments.parallel_and_serial)


def _entry(inv, c):
    """inv[c], or None when inv is None (no channel rescaled: see _col). Chosen at compile
    time (an overload), so it also prunes for an inv that is a local variable, such as a strip
    part(inv, m0, m1), not only for a kernel argument."""
    return None if inv is None else inv[c]


@overload(_entry)
def _entry_overload(inv, c):
    if isinstance(inv, (types_.NoneType, types_.Omitted)):
        return lambda inv, c: None
    return lambda inv, c: inv[c]


@njit(inline='always', **JIT)
def _slab_item(item, groups, N, C, K):
    """Work item `item` of the slab kernels as (k, c0, c1, start, stop): channels c0:c1 (the
    item's run of `groups` runs of consecutive channels) over images start:stop (chunk k of
    K)."""
    k = item // groups
    g = item % groups
    cper = (C + groups - 1) // groups
    per = (N + K - 1) // K
    return (k, min(C, g * cper), min(C, (g + 1) * cper), k * per, min(N, (k + 1) * per))


@njit(inline='always', **JIT)
def _column_item(item, strip, M):
    """Work item `item` of the strip-wise column kernels (column_partials, column_sums) as
    (k, m0, m1): columns m0:m1 (a strip of `strip`) of chunk k."""
    strips = (M + strip - 1) // strip
    m0 = (item % strips) * strip
    return item // strips, m0, min(M, m0 + strip)


@njit(**JIT)
def _slab_chunk_moments(x2, C, c0, c1, start, stop, inv, pmean_k, pm2_k):
    """(mean, M2) of channels c0:c1 over images start:stop into pmean_k[c], pm2_k[c], read in
    memory order: image by image, the group's slabs one after the other."""
    S = x2.shape[1]
    x2 = borrowed(x2)
    for c in range(c0, c1):
        pmean_k[c] = 0.0
        pm2_k[c] = 0.0
    for i in range(start, stop):
        n = float((i - start) * S)
        for c in range(c0, c1):
            mb, m2b = block_moments(x2[i * C + c], True, _entry(inv, c), True)
            _, pmean_k[c], pm2_k[c] = chan_merge(n, pmean_k[c], pm2_k[c], float(S), mb, m2b)


@_parallel_and_serial(JIT)
def slab_partials(x2, N, C, inv, groups, pmean, pm2):
    """Per-(chunk, channel) (mean, M2) of x*inv[c] over the chunk's slabs; pmean, pm2: (K, C).
    inv is None, or 1 except for channels whose squares overflow (see `moments`).

    Work item (k, g) covers chunk k of the batch and the g-th of `groups` runs of consecutive
    channels, and reads its slabs in memory order. Each channel's merges run in the same
    order whatever the grouping, so `groups` (set from the thread count) never changes a
    result. Items of one channel each, walking down the batch, read one slab per image with
    jumps of C*S values between: (128, 256, 14, 14) float32 took 3.6 ms against 1.3 ms in
    memory order with two groups."""
    # The item's work lives in its own function: inlined into the parallel loop with its
    # bounds computed there, the same loop measured 4x slower.
    K = pmean.shape[0]
    for item in prange(K * groups):
        k, c0, c1, start, stop = _slab_item(item, groups, N, C, K)
        _slab_chunk_moments(x2, C, c0, c1, start, stop, inv, pmean[k], pm2[k])


@njit(inline='always', **JIT)
def _col(xi, j, inv, zero):
    """xi[j]*inv[j] in the type of the scalar zero; inv None (no channel rescaled) compiles
    without the multiply."""
    return _term(like(zero, ld(xi[j])), _entry(inv, j))


@njit(inline='always', **JIT)
def _column_block(x2, b0, b1, m0, inv, acc, dsum, qsum, shifted):
    """Per column of rows b0:b1 and columns m0:m0 + acc.size of x2*inv (inv indexed like those
    columns), in acc's dtype: the provisional mean acc, d = dsum =
    sum(x - acc) and q = qsum = sum((x - acc)^2) (see _moments). shifted: acc already holds
    a provisional mean given in advance (see _column_chunk) and the block is read once;
    otherwise acc is first computed as the block's own mean (a second read, from L2)."""
    # Rows are taken four at a time: the per-column accumulators are loaded and stored once per
    # four rows instead of once per row (the loop is bound by those L1 accesses, not by flops).
    M = acc.size
    zero = like(acc, 0.0)
    nb = b1 - b0
    b4 = b0 + nb // 4 * 4
    if not shifted:
        acc[:] = 0.0
        for i in range(b0, b4, 4):
            x0, x1, x2_, x3 = (x2[i, m0:m0 + M], x2[i + 1, m0:m0 + M], x2[i + 2, m0:m0 + M],
                               x2[i + 3, m0:m0 + M])
            for j in range(M):
                acc[j] += ((_col(x0, j, inv, zero) + _col(x1, j, inv, zero))
                           + (_col(x2_, j, inv, zero) + _col(x3, j, inv, zero)))
        for i in range(b4, b1):
            xi = x2[i, m0:m0 + M]
            for j in range(M):
                acc[j] += _col(xi, j, inv, zero)
        for j in range(M):
            acc[j] /= nb
    dsum[:] = 0.0
    qsum[:] = 0.0
    for i in range(b0, b4, 4):
        x0, x1, x2_, x3 = (x2[i, m0:m0 + M], x2[i + 1, m0:m0 + M], x2[i + 2, m0:m0 + M],
                           x2[i + 3, m0:m0 + M])
        for j in range(M):
            m = acc[j]
            t0 = _col(x0, j, inv, zero) - m
            t1 = _col(x1, j, inv, zero) - m
            t2 = _col(x2_, j, inv, zero) - m
            t3 = _col(x3, j, inv, zero) - m
            dsum[j] += (t0 + t1) + (t2 + t3)
            qsum[j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
    for i in range(b4, b1):
        xi = x2[i, m0:m0 + M]
        for j in range(M):
            t = _col(xi, j, inv, zero) - acc[j]
            dsum[j] += t
            qsum[j] += t * t


@njit(inline='always', **JIT)
def _shift_ok(nb, dsum, qsum):
    """Whether a shifted block's provisional means were close enough: every column's block
    mean o away from its shift with o^2 <= c*var, c = COLUMN_SHIFT_MAX (o = d/nb,
    var = q/nb - o^2, so (1 + c)*d^2 <= c*nb*q). Then q is at most (1 + c) times M2 = q - d^2/nb,
    and M2 carries at most (1 + c) times q's relative rounding error. (NaN sums compare False:
    a column with NaN data does not force the redo of every later block.)"""
    # Counted without an early exit, so the loop vectorises: with an exit it cost a quarter of
    # a 32-row block's reduction.
    lhs = like(dsum, 1.0 + COLUMN_SHIFT_MAX)
    rhs = like(dsum, COLUMN_SHIFT_MAX * nb)
    far = 0
    for j in range(dsum.size):
        d = dsum[j]
        far += lhs * d * d > rhs * qsum[j]
    return far == 0


@njit(inline='always', **JIT)
def _narrow_block_ok(x2, b0, b1, m0, acc, qsum):
    """Whether a float32 _column_block is exact enough: every sum finite, and every column's
    mean square at least TINY_MEAN_SQUARE unless the column is constant (all t = 0)."""
    floor = like(qsum, (b1 - b0) * TINY_MEAN_SQUARE)
    bad = 0
    tiny = 0
    for j in range(acc.size):  # counted without an early exit, as in _shift_ok
        bad += not np.isfinite(acc[j])
        bad += not np.isfinite(qsum[j])
        tiny += qsum[j] < floor
    if bad:
        return False
    if tiny:
        for j in range(acc.size):
            if qsum[j] < floor and not _constant(x2[b0:b1, m0 + j], acc[j]):
                return False
    return True


@njit(inline='always', **JIT)
def _column_block_plain(x2, b0, b1, m0, inv, acc, dsum, qsum):
    """_column_block in float64, one row per loop: the rare redo of a float32 block (smaller
    code than the four-row form, which would double the kernel's compile time)."""
    nb = b1 - b0
    acc[:] = 0.0
    for i in range(b0, b1):
        xi = x2[i, m0:m0 + acc.size]
        for j in range(acc.size):
            acc[j] += _col(xi, j, inv, 0.0)
    for j in range(acc.size):
        acc[j] /= nb
    dsum[:] = 0.0
    qsum[:] = 0.0
    for i in range(b0, b1):
        xi = x2[i, m0:m0 + acc.size]
        for j in range(acc.size):
            t = _col(xi, j, inv, 0.0) - acc[j]
            dsum[j] += t
            qsum[j] += t * t


@njit(**JIT)
def _column_chunk(x2, m0, inv, k, K, rows_per_block, shift_min_rows, mean, m2, acc, dsum,
                  qsum, acc_n, dsum_n, qsum_n, shift, shift_first):
    # Rows of chunk k, columns m0:m0 + mean.size (a strip; mean, m2, shift, inv and the work
    # arrays cover just those columns).
    # acc_n, dsum_n, qsum_n are in x's dtype: each block is reduced in x's dtype (for float32
    # twice the SIMD width), and a float32 block that is not exact enough is redone in float64
    # (acc, dsum, qsum).
    # Blocks of at least shift_min_rows rows (COLUMN_SHIFT_MIN_ROWS) are shifted: read once,
    # with acc_n = a provisional mean given in advance, the chunk's running mean after its
    # first block and `shift` for the first if shift_first. A first block whose mean strays
    # too far from `shift` (_shift_ok; e.g. trends along the rows) is read again with its own
    # mean.
    # Measured single-thread on streamed (4096, 1024) float32: 9.2 us per 32-row block
    # shifted, 12.5 us read twice; the batch_norm statistics of (4096, 1024), (1024, 1024) and
    # (16384, 64) float32 took 0.90, 0.80 and 0.74 times as long as with every block read twice.
    N = x2.shape[0]
    M = mean.size
    per = (N + K - 1) // K
    stop = min(N, (k + 1) * per)
    n = 0.0
    for b0 in range(k * per, stop, rows_per_block):
        b1 = min(b0 + rows_per_block, stop)
        nb = float(b1 - b0)
        shifted = (n > 0.0 or shift_first) and nb >= shift_min_rows
        while True:
            if shifted:
                for j in range(M):
                    acc_n[j] = mean[j] if n > 0.0 else shift[j]
            _column_block(x2, b0, b1, m0, inv, acc_n, dsum_n, qsum_n, shifted)
            # Only a first block shifted by other rows' mean is tested: a block shifted by the
            # chunk's running mean bounds its own error (see _moments).
            if shifted and n == 0.0 and not _shift_ok(nb, dsum_n, qsum_n):
                shifted = False
            else:
                break
        if narrow(acc_n) and not _narrow_block_ok(x2, b0, b1, m0, acc_n, qsum_n):
            _column_block_plain(x2, b0, b1, m0, inv, acc, dsum, qsum)
            n = _merge_block(n, nb, acc, dsum, qsum, mean, m2)
        else:
            n = _merge_block(n, nb, acc_n, dsum_n, qsum_n, mean, m2)


@njit(**MERGE_JIT)
def _merge_block(n, nb, acc, dsum, qsum, mean, m2):
    """Chan-merge a block's per-column (acc, dsum, qsum) into the running (mean, m2) of n
    rows; returns the new row count. Compiled without 'arcp' (see _config.MERGE_JIT): d/nb is
    a true division, so a column of one repeated value gets exactly that value as its mean."""
    nn = n + nb
    f = n * nb / nn
    for j in range(acc.size):
        d = float(dsum[j])
        dn = d / nb
        mb = float(acc[j]) + dn
        m2b = float(qsum[j]) - d * dn
        delta = mb - mean[j]
        mean[j] += delta * (nb / nn)
        m2[j] += m2b + delta * delta * f
    return nn


@njit(**JIT)
def _head_mean(x2, inv, rows, m0, m1, shift):
    """shift[m0:m1] = the plain float64 mean of x2*inv over its first `rows` rows."""
    iv = part(inv, m0, m1)
    sh = shift[m0:m1]
    sh[:] = 0.0
    for i in range(rows):
        xi = x2[i, m0:m1]
        for j in range(m1 - m0):
            sh[j] += _col(xi, j, iv, 0.0)
    for j in range(m1 - m0):
        sh[j] /= rows


@_parallel_and_serial(JIT)
def column_partials(x2, inv, rows_per_block, shift_min_rows, strip, pmean, pm2):
    """Per-(chunk, column) (mean, M2) of x2*inv (N, M; inv None: unscaled), in blocks of
    rows_per_block rows, read once when shifted (blocks of at least shift_min_rows rows, see
    _column_chunk); pmean, pm2: (K, M), any contents (each work item zeroes its part).

    Work items are (chunk of rows, strip of `strip` columns): wide rows are cut into strips so
    that a block of rows_per_block rows, and every per-column array of the item, stays small
    (COLUMN_STRIP_BYTES, functional._column_strip). Columns never interact, so a column's
    result depends on its chunk and blocks only."""
    N, M = x2.shape
    K = pmean.shape[0]
    strips = (M + strip - 1) // strip
    # The mean of the first block of rows gives every chunk's first block its shift (see
    # _column_chunk): with K chunks of two blocks each, half the blocks were read twice. Any
    # value near the mean serves, so a plain sum does (a second _column_chunk call site here
    # cost 5 s of compile time).
    shift = np.zeros(M)
    use_shift = K > 1 and min(N, rows_per_block) >= shift_min_rows
    if use_shift and strips == 1:
        _head_mean(x2, inv, rows_per_block, 0, M, shift)  # no parallel region for one item
    elif use_shift:
        for s in prange(strips):
            _head_mean(x2, inv, rows_per_block, s * strip, min(M, (s + 1) * strip), shift)
    for item in prange(K * strips):
        k, m0, m1 = _column_item(item, strip, M)
        W = m1 - m0
        acc = np.empty(W)
        dsum = np.empty(W)
        qsum = np.empty(W)
        acc_n = work(x2, W)
        dsum_n = work(x2, W)
        qsum_n = work(x2, W)
        pmean[k, m0:m1] = 0.0
        pm2[k, m0:m1] = 0.0
        _column_chunk(x2, m0, part(inv, m0, m1), k, K, rows_per_block, shift_min_rows,
                      pmean[k, m0:m1], pm2[k, m0:m1], acc, dsum, qsum, acc_n, dsum_n, qsum_n,
                      shift[m0:m1], use_shift)


@njit(**JIT)
def merge_partials(pmean, pm2, n_rows, scale, C, mean, m2):
    """Merge the (K, C*P) partial triples into per-channel (mean, M2): first the K chunks of
    each column in order (vectorised across columns; the K chunks split n_rows rows as the
    kernels do, ceil(n_rows/K) each, and every entry of a chunk counts its rows times `scale`
    values; counted here, since the NumPy version took 20 us a call), then the P adjacent
    columns of each channel in order, into mean and m2 ((C,) float64). The chunks merge into
    pmean[0], pm2[0] in place (the partials are scratch), and the outputs come from the
    caller: for (2, 65536) partials this took 1.0-1.5 ms with copies of the partials and
    outputs allocated here, 0.67-0.80 ms without the copies, 0.21 ms with the outputs
    allocated by NumPy in the caller. Returns whether every mean and m2 is finite (the
    caller's test for squares that overflowed, in the loop that has the values at hand)."""
    K, M = pmean.shape
    per = (n_rows + K - 1) // K
    n = float(min(n_rows, per) * scale)
    col_mean = pmean[0]
    col_m2 = pm2[0]
    for k in range(1, K):
        nb = float(min(n_rows - k * per, per) * scale)
        if nb <= 0:
            continue
        nn = n + nb
        f_mean = nb / nn
        f_m2 = n * nb / nn
        mk = pmean[k]
        qk = pm2[k]
        for j in range(M):
            delta = mk[j] - col_mean[j]
            col_mean[j] += delta * f_mean
            col_m2[j] += qk[j] + delta * delta * f_m2
        n = nn
    _merge_columns(col_mean, col_m2, n, C, mean, m2)
    bad = 0
    for c in range(C):  # counted without an early exit, so the loop vectorises
        bad += not (np.isfinite(mean[c]) and np.isfinite(m2[c]))
    return bad == 0


@njit(inline='always', **JIT)
def _merge_columns(col_mean, col_m2, n, C, mean, m2):
    """The P = M/C adjacent columns of each channel, n values each, Chan-merged in order into
    mean and m2 ((C,)). Every column holds n values, so merging column p into the first p is
    Chan's formula with the factors of (p*n, n) values, the same for every channel: one
    branch-free loop across the channels per p (chan_merge per channel, with its empty-side
    branches, cost 1.7 ns a channel: 0.11 ms of the (4, 65536) forward). The factors equal
    chan_merge's (p*n and (p + 1)*n are exact, so n/((p + 1)*n) rounds to 1/(p + 1))."""
    # Plain loops, not slice assignments: with those merge_partials took 3.5 s to compile,
    # against 0.9 s.
    P = col_mean.size // C
    if n == 0.0:  # no values: chan_merge of empty triples
        for c in range(C):
            mean[c] = 0.0
            m2[c] = 0.0
    elif P == 1:
        for c in range(C):
            mean[c] = col_mean[c]
            m2[c] = col_m2[c]
    else:
        for c in range(C):
            mean[c] = col_mean[c * P]
            m2[c] = col_m2[c * P]
        for p in range(1, P):
            f_mean = 1.0 / (p + 1)
            f_m2 = p * n / (p + 1)
            for c in range(C):
                delta = col_mean[c * P + p] - mean[c]
                mean[c] += delta * f_mean
                m2[c] = m2[c] + col_m2[c * P + p] + delta * delta * f_m2


@njit(**JIT)
def _columns(v, S):
    """Per-channel values v as per-column values of the (N, C*S) layout: each repeated S times
    (v itself when S == 1, the (N, C) case)."""
    if S == 1:
        return v
    return _repeat(v, S)


@njit(**JIT)
def _repeat(v, S):
    """np.repeat(v, S) for a 1-d v: a plain loop compiles in a fraction of np.repeat's time
    (with np.repeat, small_forward and small_backward took 5.5 s longer to compile)."""
    out = np.empty(v.size * S, v.dtype)
    for c in range(v.size):
        for s in range(S):
            out[c * S + s] = v[c]
    return out


@_parallel_and_serial(JIT)
def channel_absmax(x3):
    """max |x| per channel of an (N, C, S) array; NaN where the channel holds NaN or inf."""
    N, C, S = x3.shape
    out = np.zeros(C)
    for c in prange(C):
        m = 0.0
        for i in range(N):
            xr = x3[i, c]
            for s in range(S):
                a = abs(ld(xr[s]))
                if not np.isfinite(a):
                    m = np.nan
                elif a > m:
                    m = a
        out[c] = m
    return out


@_parallel_and_serial(JIT)
def column_sums(dy2, x2, mh, rows_per_block, strip, sdy, sdyx):
    """Per-(chunk, column) sum(dy) and sum(dy*(x - mh)) of (N, M) arrays, mh in x's dtype (the
    caller removes (mean - mh)*sum(dy) for sums about the float64 mean); blocks of
    rows_per_block rows summed in x's dtype (for float32 twice the SIMD width, and x - mh exact
    near the mean), added in float64 to sdy, sdyx ((K, M), any contents: each work item zeroes
    its part).

    Work items are (chunk of rows, strip of `strip` columns), as in column_partials: wide rows
    then need few chunks (K, functional._column_sums), so the (K, M) float64 partials stay
    small, and each item's block sums stay in L1. A column's sums depend on its chunk only."""
    # One row per loop, not four as in _column_block: four rows (two loops and their remainder
    # loops) added 13 s to the cold compile for a few percent.
    N, M = x2.shape
    K = sdy.shape[0]
    strips = (M + strip - 1) // strip
    per = (N + K - 1) // K
    for item in prange(K * strips):
        k, m0, m1 = _column_item(item, strip, M)
        a = sdy[k, m0:m1]
        b = sdyx[k, m0:m1]
        a[:] = 0.0
        b[:] = 0.0
        m = mh[m0:m1]
        sd = work(x2, m1 - m0)
        sx = work(x2, m1 - m0)
        stop = min(N, (k + 1) * per)
        for b0 in range(k * per, stop, rows_per_block):
            sd[:] = 0.0
            sx[:] = 0.0
            for i in range(b0, min(b0 + rows_per_block, stop)):
                di = dy2[i, m0:m1]
                xi = x2[i, m0:m1]
                for j in range(m1 - m0):
                    d = ld(di[j])
                    sd[j] += d
                    sx[j] += d * (ld(xi[j]) - m[j])
            for j in range(m1 - m0):
                a[j] += float(sd[j])
                b[j] += float(sx[j])


@njit(**JIT)
def total_sums(sdy, sdyx, mean, mh, sum_dy, sum_dyx):
    """Per-channel totals of column_sums' (K, C*P) partials: summed over the K chunks in order
    (vectorised across columns, into sdy[0], sdyx[0] in place: the partials are scratch), then
    over each channel's P adjacent columns, and sum(dy*(x - mean)) = sum(dy*(x - mh)) -
    (mean - mh)*sum(dy) (mh: the mean rounded to x's dtype, as column_sums used it). In NumPy
    these were six calls, 60 us of a 0.49 ms (512, 2048) float32 backward."""
    K, M = sdy.shape
    C = mean.size
    P = M // C
    a = sdy[0]
    b = sdyx[0]
    for k in range(1, K):
        ak = sdy[k]
        bk = sdyx[k]
        for j in range(M):
            a[j] += ak[j]
            b[j] += bk[j]
    for c in range(C):
        s = 0.0
        t = 0.0
        for p in range(P):
            s += a[c * P + p]
            t += b[c * P + p]
        sum_dy[c] = s
        sum_dyx[c] = t - (mean[c] - float(mh[c])) * s


@njit(**JIT)
def finish_stats(mean, m2, n, inv, eps, rstd, var):
    """Per-channel statistics from merged (mean, M2) of n values of x*inv (inv None: x), in
    place: mean /= inv, the biased variance var = M2/n/inv**2 (inf beyond float64's range) and
    rstd = 1/sqrt(var + eps), formed as inv/sqrt(M2/n + eps*inv**2) so that it stays finite
    where var does not (see _moments.rstd_of)."""
    for c in range(mean.size):
        iv = 1.0 if inv is None else inv[c]
        var_scaled = m2[c] / n
        rstd[c] = rstd_of(var_scaled, iv, eps)
        var[c] = var_scaled / (iv * iv)
        mean[c] /= iv


@njit(**JIT)
def affine_terms(mean, rstd, weight, bias, mh, a, b):
    """The per-channel terms of y = (x - mh)*a + b in the dtype of mh, a and b (x's):
    mh = mean rounded, a = rstd*weight rounded, and b = bias - (mean - mh)*a, which adds back
    the part of the mean that mh drops (see functional._channel_affine). weight and bias are
    arrays, or the scalars 1 and 0 when absent (`at`)."""
    for c in range(mean.size):
        m = like(mh, mean[c])
        ac = like(a, rstd[c] * float(at(weight, c)))
        mh[c] = m
        a[c] = ac
        b[c] = like(b, float(at(bias, c)) - (mean[c] - float(m)) * float(ac))


@_parallel_and_serial(JIT)
def slab_affine(x2, C, mean, a, b, y2):
    """y = (x - mean[c])*a[c] + b[c] on (N*C, S) slabs, row i being channel i % C; mean, a, b
    and the arithmetic in x's dtype (see functional._channel_affine for how the mean's
    rounding is kept)."""
    S = x2.shape[1]
    x2, y2 = borrowed(x2), borrowed(y2)
    for i in prange(x2.shape[0]):
        c = i % C
        m = mean[c]
        ac = a[c]
        bc = b[c]
        xr = x2[i]
        yr = y2[i]
        for s in range(S):
            yr[s] = st(yr, (ld(xr[s]) - m) * ac + bc)


@_parallel_and_serial(JIT)
def column_affine(x2, mean_col, a_col, b_col, y2):
    """y = (x - mean_col)*a_col + b_col on an (N, M) matrix, per-column parameters (in x's
    dtype, as in slab_affine)."""
    # One row per inner loop: a four-row version (one parameter load per four rows) did not
    # vectorise (too many possible aliasings to check) and measured 3.5x slower.
    M = x2.shape[1]
    for i in prange(x2.shape[0]):
        xi = x2[i]
        yi = y2[i]
        for j in range(M):
            yi[j] = st(yi, (ld(xi[j]) - mean_col[j]) * a_col[j] + b_col[j])


@njit(inline='always', **ELEMENTWISE_JIT)
def _dx_params(x, mean, rstd, k1, mean_dy, mean_dyx, c):
    """Channel c's float64 dx parameters in x's dtype: (mh, rstd, lo, k1, mean_dy, mean_dyx),
    the mean split as in _moments.split_mean."""
    r = like(x, rstd[c])
    mh, lo = split_mean(r, mean[c])
    return mh, r, lo, like(x, k1[c]), like(x, mean_dy[c]), like(x, mean_dyx[c])


@njit(**ELEMENTWISE_JIT)
def _slab_dx(xr, dr, m, r, lc, a, md, mx, out):
    """dx = a*((dy - md) - xhat*mx) on one slab, xhat = (x - m)*r - lc, all in x's dtype
    (see slab_backward). A function of its own: its flags keep the written association (see
    _config.ELEMENTWISE_JIT) inside a kernel compiled with 'reassoc'."""
    for s in range(xr.size):
        out[s] = st(out, a * ((ld(dr[s]) - md) - ((ld(xr[s]) - m) * r - lc) * mx))


@_parallel_and_serial(ELEMENTWISE_JIT)
def column_dx(dy2, x2, mean_col, rstd_col, k1, mean_dy, mean_dyx, dx2):
    """The dx of slab_backward on an (N, M) matrix with per-column float64 parameters."""
    N, M = x2.shape
    mh = work(x2, M)
    rs = work(x2, M)
    lo = work(x2, M)
    a = work(x2, M)
    md = work(x2, M)
    mx = work(x2, M)
    for j in range(M):
        mh[j], rs[j], lo[j], a[j], md[j], mx[j] = _dx_params(x2, mean_col, rstd_col, k1,
                                                             mean_dy, mean_dyx, j)
    for i in prange(N):
        xi = x2[i]
        di = dy2[i]
        out = dx2[i]
        for j in range(M):
            xh = (ld(xi[j]) - mh[j]) * rs[j] - lo[j]
            out[j] = st(out, a[j] * ((ld(di[j]) - md[j]) - xh * mx[j]))


@njit(**JIT)
def _slab_chunk_sums(dy2, x2, C, c0, c1, start, stop, mean, sdy_k, sdyx_k):
    """sum(dy) and sum(dy*(x - mean[c])) of channels c0:c1 over images start:stop into
    sdy_k[c], sdyx_k[c], read in memory order (see slab_partials). Per slab the kernel sums
    dy*(x - mh) in x's dtype, mh the mean rounded to it, and takes (mean - mh)*sum(dy) off in
    float64, as column_sums does. (Passing that remainder into the loop as a separate term
    does not survive compilation: with a scale of 1, 'reassoc' may fold (x - mh) - lo into
    x - (mh + lo), which drops it; measured 1e-4 dx errors at mean 1e4.)"""
    one = like(x2, 1.0)
    zero = like(x2, 0.0)
    for c in range(c0, c1):
        sdy_k[c] = 0.0
        sdyx_k[c] = 0.0
    for i in range(start, stop):
        for c in range(c0, c1):
            mh = like(x2, mean[c])
            sa, sb = grad_sums(x2[i * C + c], dy2[i * C + c], mh, one, zero, one)
            sdy_k[c] += sa
            sdyx_k[c] += sb - (mean[c] - float(mh)) * sa


@_parallel_and_serial(JIT)
def slab_backward(dy2, x2, N, C, mean, rstd, weight, training, want_sums, groups, sdy, sdyx,
                  dx2, sum_dy, sum_dyx):
    """The slabs backward ((N*C, S) slabs, row i being channel i % C) in one call: per-(chunk,
    channel) sums sdy, sdyx ((K, C), read in memory order by (chunk, channel group) items as in
    slab_partials) merged in chunk order into sum_dy = sum(dy) and sum_dyx = sum(dy*(x - mean)),
    then

        dx = k1*((dy - mean_dy) - xhat*mean_dyx),  k1 = w*rstd,  xhat = (x - mean)*rstd

    with mean_dy = sum_dy/n, mean_dyx = rstd*sum_dyx/n in training (0 in eval), in x's dtype
    (the parameters rounded per slab, the mean split as in _moments.split_mean). The
    cancelling subtractions come before the scaling by k1, so their rounding is relative to
    the result, and no k1*rstd constant is formed (it underflows for float64 |x| ~ 1e300).
    One call instead of two kernels and their NumPy glue (~25 us of host time against ~50 us
    of kernel on (8, 32, 32, 32))."""
    K = sdy.shape[0]
    S = x2.shape[1]
    n = N * S
    sum_dy[:] = 0.0
    sum_dyx[:] = 0.0
    if training or want_sums:
        for item in prange(K * groups):
            k, c0, c1, start, stop = _slab_item(item, groups, N, C, K)
            _slab_chunk_sums(dy2, x2, C, c0, c1, start, stop, mean, sdy[k], sdyx[k])
        for k in range(K):
            for c in range(C):
                sum_dy[c] += sdy[k, c]
                sum_dyx[c] += sdyx[k, c]
    k1 = weight * rstd
    mean_dy = np.zeros(C)
    mean_dyx = np.zeros(C)
    if training:
        for c in range(C):
            mean_dy[c] = sum_dy[c] / n
            mean_dyx[c] = rstd[c] * sum_dyx[c] / n  # mean(dy*xhat)
    for i in prange(N * C):
        m, r, lc, a, md, mx = _dx_params(x2, mean, rstd, k1, mean_dy, mean_dyx, i % C)
        _slab_dx(x2[i], dy2[i], m, r, lc, a, md, mx, dx2[i])


# ---------------------------------------------------------------------------------------------
# small inputs (at most SERIAL_MAX_ELEMENTS, so x sits in L2): each pass fused into one serial
# call, since for (64, 256) the separate partial/merge/affine calls and their host glue cost
# 4x the arithmetic (measured 87 us against PyTorch's 19 us).

@njit(**JIT)
def small_forward(x2, C, weight, bias, eps, rows_per_block, shift_min_rows, strip, y2,
                  mean_out, rstd_out, var_out):
    """Statistics and y for an (N, M = C*S) matrix in one call: the column statistics of
    column_partials on one chunk, strip by strip (the same compiled _column_chunk: row blocks
    in x's dtype, merged in float64), the S columns of each channel Chan-merged in order, then
    y = (x - mean)*rstd*w + b in x's dtype (finish_stats, affine_terms: as the general path).
    Returns False, with y unwritten, when a channel's statistics are not finite (squares that
    overflow, or NaN/inf data): the caller then takes the general path, which rescales."""
    N, M = x2.shape
    S = M // C
    col_mean = np.zeros((1, M))
    col_m2 = np.zeros((1, M))
    W = min(M, strip)
    acc, dsum, qsum = np.empty(W), np.empty(W), np.empty(W)
    acc_n, dsum_n, qsum_n = work(x2, W), work(x2, W), work(x2, W)
    for m0 in range(0, M, strip):
        m1 = min(M, m0 + strip)
        w = m1 - m0
        _column_chunk(x2, m0, None, 0, 1, rows_per_block, shift_min_rows, col_mean[0, m0:m1],
                      col_m2[0, m0:m1], acc[:w], dsum[:w], qsum[:w], acc_n[:w], dsum_n[:w],
                      qsum_n[:w], col_mean[0, m0:m1], False)
    m2_c = np.empty(C)
    if not merge_partials(col_mean, col_m2, N, 1, C, mean_out, m2_c):
        return False  # overflow, or NaN/inf data: the general path sorts out which
    finish_stats(mean_out, m2_c, N * S, None, eps, rstd_out, var_out)
    mh_c = work(x2, C)
    a_c = work(x2, C)
    b_c = work(x2, C)
    affine_terms(mean_out, rstd_out, weight, bias, mh_c, a_c, b_c)
    m_col = _columns(mh_c, S)
    a_col = _columns(a_c, S)
    b_col = _columns(b_c, S)
    column_affine_serial(x2, m_col, a_col, b_col, y2)  # noqa: F821 (made above)
    return True


@njit(**JIT)
def small_backward(dy2, x2, C, mean, rstd, weight, training, rows_per_block, dx2, sum_dy,
                   sum_dyx):
    """sum(dy), sum(dy*xhat) per channel and dx for an (N, M = C*S) matrix in one call
    (the formulas of the module docstring; the sums by column_sums on one chunk)."""
    N, M = x2.shape
    S = M // C
    mh_c = work(x2, C)
    for c in range(C):
        mh_c[c] = mean[c]
    a = np.empty((1, M))
    b = np.empty((1, M))
    # One strip of whole rows: strips measured 1.13-1.18x the time on (4, 65536) and
    # (16, 16384) with PyTorch interleaved, 1.00-1.02x in a two-way rerun; no gain either way.
    column_sums_serial(dy2, x2, _columns(mh_c, S), rows_per_block, M, a, b)  # noqa: F821
    # Per channel, in branch-free loops over the channels (with a slice sum and an integer
    # division per column, (4, 65536) spent 1.3 ms here, PyTorch 0.5 ms on the whole backward).
    total_sums(a, b, mean, mh_c, sum_dy, sum_dyx)
    n = float(N * S)
    k1 = np.empty(C)
    mean_dy = np.zeros(C)
    mean_dyx = np.zeros(C)
    for c in range(C):
        sum_dyx[c] *= rstd[c]
        k1[c] = weight[c] * rstd[c]
    if training:
        for c in range(C):
            mean_dy[c] = sum_dy[c] / n
            mean_dyx[c] = sum_dyx[c] / n
    m_col = _columns(mean, S)
    r_col = _columns(rstd, S)
    k1 = _columns(k1, S)
    mean_dy = _columns(mean_dy, S)
    mean_dyx = _columns(mean_dyx, S)
    column_dx_serial(dy2, x2, m_col, r_col, k1, mean_dy, mean_dyx, dx2)  # noqa: F821 (made above)


# ---------------------------------------------------------------------------------------------
# data normalization (numbanorm.scaling): mergeable moments of every column

@njit(**JIT)
def _data_column_chunk(x2, omit, start, stop, m0, m1, rows_per_block, n_k, mean_k, m2_k):
    """count, mean, M2 of columns m0:m1 over rows start:stop of x2 into n_k, mean_k, m2_k
    (rows of the (K, M) partials). Blocks of rows_per_block rows, all in float64, vectorised
    across the columns: a column's first block with values is centred on its own mean c (a
    sum read, then a centred read from cache), every later block on c too (read once), and
    the blocks' means are merged as offsets from c (as rows.data_moments)."""
    W = m1 - m0
    x2 = borrowed(x2)  # row views in the loops without reference counting (see _moments)
    cnt = n_k[m0:m1]
    off = mean_k[m0:m1]
    m2 = m2_k[m0:m1]
    cnt[:] = 0.0
    off[:] = 0.0
    m2[:] = 0.0
    c = np.empty(W)
    ctr = np.zeros(W)
    own = np.empty(W)
    d = np.empty(W)
    q = np.empty(W)
    for b0 in range(start, stop, rows_per_block):
        b1 = min(b0 + rows_per_block, stop)
        unset = 0
        for j in range(W):
            unset += cnt[j] == 0.0
        if unset:  # columns with no values yet take this block's own mean as their centre
            c[:] = 0.0
            own[:] = 0.0
            for i in range(b0, b1):
                xi = x2[i, m0:m1]
                for j in range(W):
                    v = float(ld(xi[j]))
                    ok = valid(omit, v)
                    c[j] += ok
                    own[j] += v if ok else 0.0
            for j in range(W):
                if cnt[j] == 0.0:
                    ctr[j] = own[j] / c[j] if c[j] > 0.0 else 0.0
        c[:] = 0.0
        d[:] = 0.0
        q[:] = 0.0
        # four rows a loop: one load and store of each column's sums per four rows (the loop
        # is bound by those, not by the arithmetic: 2.5x faster on (10000, 32) float32)
        b4 = b0 + (b1 - b0) // 4 * 4
        for i in range(b0, b4, 4):
            xa, xb, xc, xd = (x2[i, m0:m1], x2[i + 1, m0:m1], x2[i + 2, m0:m1],
                              x2[i + 3, m0:m1])
            for j in range(W):
                ca = ctr[j]
                va, vb, vc, vd = (float(ld(xa[j])), float(ld(xb[j])), float(ld(xc[j])),
                                  float(ld(xd[j])))
                oa, ob, oc, od = valid(omit, va), valid(omit, vb), valid(omit, vc), \
                    valid(omit, vd)
                ta = va - ca if oa else 0.0
                tb = vb - ca if ob else 0.0
                tc = vc - ca if oc else 0.0
                td = vd - ca if od else 0.0
                c[j] += (oa + ob) + (oc + od)
                d[j] += (ta + tb) + (tc + td)
                q[j] += (ta * ta + tb * tb) + (tc * tc + td * td)
        for i in range(b4, b1):
            xi = x2[i, m0:m1]
            for j in range(W):
                v = float(ld(xi[j]))
                ok = valid(omit, v)
                t = v - ctr[j] if ok else 0.0
                c[j] += ok
                d[j] += t
                q[j] += t * t
        _merge_data_block(c, d, q, cnt, off, m2)
    for j in range(W):
        off[j] += ctr[j]  # the offsets from the centres as means


@njit(**JIT)
def _data_column_range(x2, start, stop, m0, m1, lo_k, hi_k, nan_k):
    """min, max (NaN ignored) and NaN count of columns m0:m1 over rows start:stop into lo_k,
    hi_k, nan_k, vectorised across the columns as integer order keys (_moments.order_key).
    Four rows a loop: the per-column keys and counts are loaded and stored once per four rows
    (the loop is bound by those, as _data_column_chunk's sums are)."""
    W = m1 - m0
    mag, inf_bits, shift = float_bits(x2)
    klo = np.full(W, mag)
    khi = np.full(W, ~mag)
    nn = nan_k[m0:m1]
    nn[:] = 0.0
    b4 = start + max(0, stop - start) // 4 * 4  # (a chunk past the last row is empty)
    for i in range(start, b4, 4):
        xa, xb, xc, xd = x2[i, m0:m1], x2[i + 1, m0:m1], x2[i + 2, m0:m1], x2[i + 3, m0:m1]
        for j in range(W):
            va, vb, vc, vd = bits_of(xa[j]), bits_of(xb[j]), bits_of(xc[j]), bits_of(xd[j])
            ka, kb = order_key(va, mag, shift), order_key(vb, mag, shift)
            kc, kd = order_key(vc, mag, shift), order_key(vd, mag, shift)
            na, nb = (va & mag) > inf_bits, (vb & mag) > inf_bits
            nc, nd = (vc & mag) > inf_bits, (vd & mag) > inf_bits
            nn[j] += (na + nb) + (nc + nd)
            klo[j] = min(klo[j], min(min(mag if na else ka, mag if nb else kb),
                                     min(mag if nc else kc, mag if nd else kd)))
            khi[j] = max(khi[j], max(max(~mag if na else ka, ~mag if nb else kb),
                                     max(~mag if nc else kc, ~mag if nd else kd)))
    for i in range(b4, stop):
        xi = x2[i, m0:m1]
        for j in range(W):
            v = bits_of(xi[j])
            k = order_key(v, mag, shift)
            isnan = (v & mag) > inf_bits
            nn[j] += isnan
            klo[j] = min(klo[j], mag if isnan else k)
            khi[j] = max(khi[j], ~mag if isnan else k)
    for j in range(W):
        lo_k[m0 + j] = key_value(klo[j], mag, shift, np.inf)
        hi_k[m0 + j] = key_value(khi[j], mag, shift, -np.inf)


@njit(**MERGE_JIT)
def _merge_data_block(c, d, q, cnt, off, m2):
    """Chan-merge a column block (counts c, sums d, q about the columns' centres) into the
    running (cnt, off, m2), the means as offsets from the centres, per column (as
    rows.data_moments merges its blocks); written arithmetic (see _config.MERGE_JIT)."""
    for j in range(c.size):
        nb = c[j]
        if nb > 0.0:
            ob = d[j] / nb
            m2b = q[j] - d[j] * ob
            n = cnt[j]
            if n == 0.0:
                off[j] = ob
                m2[j] = m2b
                cnt[j] = nb
            else:
                nt = n + nb
                delta = ob - off[j]
                off[j] += delta * (nb / nt)
                m2[j] += m2b + delta * delta * (n * nb / nt)
                cnt[j] = nt


@_parallel_and_serial(JIT)
def data_column_moments(x2, omit, rows_per_block, strip, pn, pmean, pm2, plo, phi, pnan):
    """Per (chunk, column) of the (N, M) array x2: count, mean, M2 of the values that enter
    the statistics (every value, or the non-NaN ones when omit is not None), with plo not None
    also min, max and NaN count; pn, pmean, pm2 and plo, phi, pnan: (K, M), any contents.
    Work items are (chunk of rows, strip of columns), as in column_partials; the K chunks merge
    afterwards in order (merge_data_partials). The range is its own call before the moments
    (the chunk then comes from cache): _data_column_chunk has no range variant to compile,
    so stats.moments reuses the moments kernel that zscore and the scalers compile."""
    N, M = x2.shape
    K = pn.shape[0]
    strips = (M + strip - 1) // strip
    per = (N + K - 1) // K
    for item in prange(K * strips):
        k, m0, m1 = _column_item(item, strip, M)
        start, stop = k * per, min(N, (k + 1) * per)
        if plo is not None:
            _data_column_range(x2, start, stop, m0, m1, plo[k], phi[k], pnan[k])
        _data_column_chunk(x2, omit, start, stop, m0, m1, rows_per_block, pn[k], pmean[k],
                           pm2[k])


@_parallel_and_serial(JIT)
def data_column_range(x2, strip, plo, phi, pnan):
    """Per (chunk, column) of the (N, M) array x2: min, max (NaN ignored) and NaN count, the
    range alone (minmax_scale); plo, phi, pnan: (K, M), any contents; work items as in
    data_column_moments."""
    N, M = x2.shape
    K = plo.shape[0]
    strips = (M + strip - 1) // strip
    per = (N + K - 1) // K
    for item in prange(K * strips):
        k, m0, m1 = _column_item(item, strip, M)
        _data_column_range(x2, k * per, min(N, (k + 1) * per), m0, m1, plo[k], phi[k],
                           pnan[k])


@njit(**MERGE_JIT)
def merge_data_partials(pn, pmean, pm2, plo, phi, pnan, count, mean, m2, lo, hi, nans):
    """The (K, M) partial moments merged over K in order into (M,) count, mean, m2 (Chan; with
    pn not None), and with plo not None min, max and NaN count; written arithmetic (see
    _config.MERGE_JIT)."""
    K, M = (pn if pn is not None else plo).shape
    if pn is not None:
        for j in range(M):
            count[j] = 0.0
            mean[j] = 0.0
            m2[j] = 0.0
        for k in range(K):
            for j in range(M):
                count[j], mean[j], m2[j] = chan_merge(count[j], mean[j], m2[j], pn[k, j],
                                                      pmean[k, j], pm2[k, j])
    if plo is not None:
        for j in range(M):
            a = np.inf
            b = -np.inf
            c = 0.0
            for k in range(K):
                a = min(a, plo[k, j])
                b = max(b, phi[k, j])
                c += pnan[k, j]
            lo[j] = a
            hi[j] = b
            nans[j] = c


@_parallel_and_serial(JIT)
def data_column_norms(x2, p, rows_per_block, strip, part):
    """Per (chunk, column) of the (N, M) array x2: sum(|x|^p) in float64 (p = inf: max |x|),
    blocks of rows_per_block rows accumulated per column and then combined; part: (K, M), any
    contents. NaN propagates."""
    N, M = x2.shape
    K = part.shape[0]
    strips = (M + strip - 1) // strip
    per = (N + K - 1) // K
    for item in prange(K * strips):
        k, m0, m1 = _column_item(item, strip, M)
        acc = part[k, m0:m1]
        acc[:] = 0.0
        blk = np.empty(m1 - m0)
        for b0 in range(k * per, min(N, (k + 1) * per), rows_per_block):
            blk[:] = 0.0
            for i in range(b0, min(b0 + rows_per_block, N, (k + 1) * per)):
                xi = x2[i, m0:m1]
                if p == 2.0:
                    for j in range(m1 - m0):
                        v = float(ld(xi[j]))
                        blk[j] += v * v
                elif p == 1.0:
                    for j in range(m1 - m0):
                        blk[j] += abs(float(ld(xi[j])))
                elif p == np.inf:
                    for j in range(m1 - m0):
                        v = abs(float(ld(xi[j])))
                        blk[j] = v if (v > blk[j] or v != v) else blk[j]
                else:
                    for j in range(m1 - m0):
                        blk[j] += abs(float(ld(xi[j]))) ** p
            for j in range(m1 - m0):
                acc[j] = power_combine(p, acc[j], blk[j])


@njit(**JIT)
def merge_norm_partials(part, p, out):
    """The (K, M) partials of data_column_norms combined over K in order into out (M,)."""
    K, M = part.shape
    for j in range(M):
        out[j] = 0.0
    for k in range(K):
        for j in range(M):
            out[j] = power_combine(p, out[j], part[k, j])
