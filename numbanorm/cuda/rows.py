"""Rows geometry on CUDA: layer_norm, rms_norm, group_norm and instance_norm as statistics
per row of an (R, L = Cg*S) matrix; element (r, j) takes the affine parameters of channel
c = (r % G)*Cg + j // S. Each row is reduced by a group of `width` consecutive threads of a
block (a power of two set by L: _host._row_width), THREADS // width rows a block; long rows take
the whole block. Grid-stride over groups of rows, one launch per op. Few long rows (one group
of 8M values) are cut into chunks of a block each instead: the split-rows kernels at the end
(_host._row_chunks decides, from the shape only).

Forward, per row: every thread runs Welford over its strided elements (float64), the row's
group Chan-merges the triples (warp shuffles, shared memory across warps), then

    rstd = 1/sqrt(M2/L + eps)            (rms_norm: M2 = sum(x^2), no mean)
    y    = (x - mean)*rstd*w[c] + b[c]

A row whose M2 overflows float64 (|x| ~ 1e300) is reduced again, scaled by an exact power of
two, by the same group. Backward, per row, with xhat = (x - mean)*rstd and g = dy*w[c]:

    dx = rstd*(g - mean(g) - xhat*mean(g*xhat))      (rms_norm: no mean(g) term)

dweight/dbias are per-channel sums over rows and spatial positions: channels.column_sums.
"""
import math

from numba import cuda, float64

from ._reduce import (THREADS, chan_merge, data_update, grad_terms, group_max, group_merge,
                      group_sum2, ld, power_add, power_of_two_below, welford)


@cuda.jit(device=True)
def _row_moments(x2, r, j0, j1, centered, inv, lane, width):
    """This thread's (count, mean, M2) of x2[r, j0 + lane::width] up to j1, scaled by inv
    (centered False: M2 = sum(x^2), mean 0)."""
    cnt = 0.0
    mean = 0.0
    m2 = 0.0
    for j in range(j0 + lane, j1, width):
        v = ld(x2[r, j]) * inv
        if centered:
            cnt, mean, m2 = welford(cnt, mean, m2, v)
        else:
            cnt += 1.0
            m2 += v * v
    return cnt, mean, m2


@cuda.jit(device=True)
def _row_absmax(x2, r, n, lane, width):
    """This thread's max |x2[r, lane::width]| over the first n values (NaN-propagating)."""
    biggest = 0.0
    for j in range(lane, n, width):
        v = abs(ld(x2[r, j]))
        if v > biggest or math.isnan(v):
            biggest = v
    return biggest


@cuda.jit(device=True)
def _row_grad_sums(dy2, x2, r, j0, j1, m, s, c0, S, weight, lane, width):
    """This thread's sum(g) and sum(g*xhat) over x2[r, j0 + lane::width] up to j1,
    g = dy*w[c], xhat = (x - m)*s."""
    sum_g = 0.0
    sum_gx = 0.0
    for j in range(j0 + lane, j1, width):
        g = ld(dy2[r, j]) * ld(weight[c0 + j // S])
        sum_g += g
        sum_gx += g * ((ld(x2[r, j]) - m) * s)
    return sum_g, sum_gx


@cuda.jit
def forward(x2, G, S, Cg, weight, bias, eps, centered, width, y2, mean_out, rstd_out):
    sn = cuda.shared.array(THREADS, float64)
    smean = cuda.shared.array(THREADS, float64)
    sm2 = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    per_block = THREADS // width
    # Every thread runs every iteration (the group reductions synchronise the whole block);
    # a thread whose row lies past the end (the last rows of the last block) reads and writes
    # nothing: its loops are empty.
    for r0 in range(cuda.blockIdx.x * per_block, R, cuda.gridDim.x * per_block):
        r = r0 + t // width
        n_row = L if r < R else 0
        cnt, mean, m2 = _row_moments(x2, r, 0, n_row, centered, 1.0, lane, width)
        cnt, mean, m2 = group_merge(sn, smean, sm2, cnt, mean, m2, width)
        inv = 1.0
        bad = r < R and not (math.isfinite(m2) and math.isfinite(mean))
        # Rows whose squares overflow float64 (|x| ~ 1e300) are reduced again scaled by an
        # exact power of two; the block takes that path together when any of its rows needs it.
        if cuda.syncthreads_or(1 if bad else 0):
            biggest = group_max(sn, _row_absmax(x2, r, n_row, lane, width), width)
            if bad and math.isfinite(biggest) and biggest > 0.0:
                inv = power_of_two_below(biggest)
            c2, mean2, m22 = _row_moments(x2, r, 0, n_row, centered, inv, lane, width)
            c2, mean2, m22 = group_merge(sn, smean, sm2, c2, mean2, m22, width)
            if inv != 1.0:
                cnt, mean, m2 = c2, mean2, m22
        if r < R:
            mean = mean / inv
            rstd = inv / math.sqrt(m2 / cnt + eps * inv * inv)
            if lane == 0:
                mean_out[r] = mean
                rstd_out[r] = rstd
            c0 = (r % G) * Cg
            for j in range(lane, L, width):
                c = c0 + j // S
                y2[r, j] = (ld(x2[r, j]) - mean) * (rstd * ld(weight[c])) \
                    + ld(bias[c])


@cuda.jit
def backward(dy2, x2, mean, rstd, G, S, Cg, weight, centered, width, dx2):
    sa = cuda.shared.array(THREADS, float64)
    sb = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    per_block = THREADS // width
    for r0 in range(cuda.blockIdx.x * per_block, R, cuda.gridDim.x * per_block):
        r = r0 + t // width
        n_row = L if r < R else 0  # see forward
        m = 0.0
        s = 0.0
        c0 = 0
        if r < R:
            m = mean[r]
            s = rstd[r]
            c0 = (r % G) * Cg
        sum_g, sum_gx = _row_grad_sums(dy2, x2, r, 0, n_row, m, s, c0, S, weight, lane, width)
        sum_g, sum_gx = group_sum2(sa, sb, sum_g, sum_gx, width)
        mean_g = sum_g / L if centered else 0.0
        mean_gx = sum_gx / L
        for j in range(lane, n_row, width):
            g = ld(dy2[r, j]) * ld(weight[c0 + j // S])
            xhat = (ld(x2[r, j]) - m) * s
            dx2[r, j] = s * (g - mean_g - xhat * mean_gx)


# ---------------------------------------------------------------------------------------------
# split rows: few rows of many values (one group of 8M values) would leave all but a few of the
# GPU's blocks idle with a block per row, so each row is cut into P chunks of its own block:
# partial statistics per (row, chunk), merged per row in a fixed order, then elementwise passes.

@cuda.jit(device=True, inline=True)
def _chunk(L, P, p):
    per = (L + P - 1) // P
    return p * per, min(L, (p + 1) * per)


@cuda.jit
def chunk_moments(x2, P, centered, pn, pmean, pm2):
    """(count, mean, M2) (centered False: M2 = sum(x^2)) of chunk p of row r into
    pn/pmean/pm2[r, p], one block per (r, p)."""
    sn = cuda.shared.array(THREADS, float64)
    smean = cuda.shared.array(THREADS, float64)
    sm2 = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    t = cuda.threadIdx.x
    for item in range(cuda.blockIdx.x, R * P, cuda.gridDim.x):
        r = item // P
        j0, j1 = _chunk(L, P, item % P)
        cnt, mean, m2 = _row_moments(x2, r, j0, j1, centered, 1.0, t, THREADS)
        cnt, mean, m2 = group_merge(sn, smean, sm2, cnt, mean, m2, THREADS)
        if t == 0:
            pn[r, item % P] = cnt
            pmean[r, item % P] = mean
            pm2[r, item % P] = m2


@cuda.jit
def merge_chunk_moments(x2, pn, pmean, pm2, centered, eps, mean_out, rstd_out):
    """Per row, one block: merge the chunks' triples (thread t takes chunks t, t + THREADS, ...
    in order, then the block's tree), rstd = 1/sqrt(M2/L + eps). A row whose sums are not
    finite on finite data (|x| ~ 1e300) is reduced again here, whole, scaled by an exact power
    of two: slow, and only for such rows."""
    sn = cuda.shared.array(THREADS, float64)
    smean = cuda.shared.array(THREADS, float64)
    sm2 = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    P = pn.shape[1]
    t = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):
        cnt = 0.0
        mean = 0.0
        m2 = 0.0
        for p in range(t, P, THREADS):
            if centered:
                cnt, mean, m2 = chan_merge(cnt, mean, m2, pn[r, p], pmean[r, p], pm2[r, p])
            else:
                cnt += pn[r, p]
                m2 += pm2[r, p]
        cnt, mean, m2 = group_merge(sn, smean, sm2, cnt, mean, m2, THREADS)
        inv = 1.0
        if not (math.isfinite(m2) and math.isfinite(mean)):
            biggest = group_max(sn, _row_absmax(x2, r, L, t, THREADS), THREADS)
            if math.isfinite(biggest) and biggest > 0.0:
                inv = power_of_two_below(biggest)
                cnt, mean, m2 = _row_moments(x2, r, 0, L, centered, inv, t, THREADS)
                cnt, mean, m2 = group_merge(sn, smean, sm2, cnt, mean, m2, THREADS)
        if t == 0:
            mean_out[r] = mean / inv
            rstd_out[r] = inv / math.sqrt(m2 / cnt + eps * inv * inv)


@cuda.jit
def split_affine(x1, L, G, S, Cg, mean, rstd, weight, bias, y1):
    """y = (x - mean[r])*rstd[r]*w[c] + b[c] elementwise over the flat (R*L) rows."""
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, x1.shape[0],
                   cuda.gridDim.x * THREADS):
        r = i // L
        c = (r % G) * Cg + (i % L) // S
        y1[i] = (ld(x1[i]) - mean[r]) * (rstd[r] * ld(weight[c])) + ld(bias[c])


@cuda.jit
def chunk_grad_sums(dy2, x2, mean, rstd, G, S, Cg, weight, P, psg, psgx):
    """sum(g) and sum(g*xhat) of chunk p of row r into psg/psgx[r, p] (g = dy*w[c]), one
    block per (r, p)."""
    sa = cuda.shared.array(THREADS, float64)
    sb = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    t = cuda.threadIdx.x
    for item in range(cuda.blockIdx.x, R * P, cuda.gridDim.x):
        r = item // P
        j0, j1 = _chunk(L, P, item % P)
        m = mean[r]
        s = rstd[r]
        c0 = (r % G) * Cg
        a, b = _row_grad_sums(dy2, x2, r, j0, j1, m, s, c0, S, weight, t, THREADS)
        a, b = group_sum2(sa, sb, a, b, THREADS)
        if t == 0:
            psg[r, item % P] = a
            psgx[r, item % P] = b


@cuda.jit
def merge_chunk_sums(psg, psgx, sg, sgx):
    """Per row: the chunks' sums added in chunk order (one thread a row)."""
    R, P = psg.shape
    for r in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, R, cuda.gridDim.x * THREADS):
        a = 0.0
        b = 0.0
        for p in range(P):
            a += psg[r, p]
            b += psgx[r, p]
        sg[r] = a
        sgx[r] = b


@cuda.jit
def split_dx(dy1, x1, L, G, S, Cg, mean, rstd, weight, centered, sg, sgx, dx1):
    """dx = rstd*(g - mean(g) - xhat*mean(g*xhat)) elementwise over the flat rows."""
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, x1.shape[0],
                   cuda.gridDim.x * THREADS):
        r = i // L
        c = (r % G) * Cg + (i % L) // S
        s = rstd[r]
        g = ld(dy1[i]) * ld(weight[c])
        xhat = (ld(x1[i]) - mean[r]) * s
        mean_g = sg[r] / L if centered else 0.0
        dx1[i] = s * (g - mean_g - xhat * (sgx[r] / L))


# ---------------------------------------------------------------------------------------------
# data normalization (numbanorm.scaling, numbanorm.moments): statistics per row of an (R, L)
# array (rows; slabs as (N*C, S) rows merged per channel), each row cut into P chunks; item
# (r, p) is reduced by a group of `width` threads, its partial written at [p, r] and merged
# over p (and the batch, for slabs) by channels.merge_data / channels.merge_norms.

@cuda.jit(device=True, inline=True)
def _item(i0, width, R, P, L):
    """(r, p, j0, j1, valid): the row, chunk and value range of this thread's item i0 +
    threadIdx.x // width (groups of `width` threads an item); past the last item (valid
    False) the range is empty, and the thread still takes part in the group reductions."""
    item = i0 + cuda.threadIdx.x // width
    valid = item < R * P
    j0 = 0
    j1 = 0
    if valid:
        j0, j1 = _chunk(L, P, item % P)
    return item // P, item % P, j0, j1, valid


@cuda.jit(device=True)
def _data_values(x2, r, j0, j1, omit, lane, width):
    """This thread's (count, mean, M2, min, max, NaN count) of x2[r, j0 + lane::width] up to
    j1: Welford over the values that enter (every value; omit: the non-NaN ones), min and max
    of the non-NaN ones."""
    cnt = 0.0
    mean = 0.0
    m2 = 0.0
    lo = math.inf
    hi = -math.inf
    nans = 0.0
    for j in range(j0 + lane, j1, width):
        cnt, mean, m2, lo, hi, nans = data_update(cnt, mean, m2, lo, hi, nans, ld(x2[r, j]),
                                                  omit)
    return cnt, mean, m2, lo, hi, nans


@cuda.jit
def data_moments(x2, P, omit, width, pn, pmean, pm2, plo, phi, pnan):
    """Partial statistics of chunk p of row r into p*[p, r] (see _data_values)."""
    sn = cuda.shared.array(THREADS, float64)
    smean = cuda.shared.array(THREADS, float64)
    sm2 = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    per_block = THREADS // width
    items = R * P
    for i0 in range(cuda.blockIdx.x * per_block, items, cuda.gridDim.x * per_block):
        r, p, j0, j1, valid = _item(i0, width, R, P, L)
        cnt, mean, m2, lo, hi, nans = _data_values(x2, r, j0, j1, omit, lane, width)
        cnt, mean, m2 = group_merge(sn, smean, sm2, cnt, mean, m2, width)
        lo = -group_max(sn, -lo, width)
        hi = group_max(sn, hi, width)
        nans, _ = group_sum2(sn, smean, nans, 0.0, width)
        if lane == 0 and valid:
            pn[p, r] = cnt
            pmean[p, r] = mean
            pm2[p, r] = m2
            plo[p, r] = lo
            phi[p, r] = hi
            pnan[p, r] = nans


@cuda.jit
def data_norms(x2, P, power, inv, slot_mod, width, part):
    """sum(|x*inv[r % slot_mod]|^power) (power = inf: max |x|, NaN-propagating) of chunk p
    of row r into part[p, r] (inv: 1, or an exact rescaling for slots whose sums overflow)."""
    sa = cuda.shared.array(THREADS, float64)
    sb = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    per_block = THREADS // width
    items = R * P
    for i0 in range(cuda.blockIdx.x * per_block, items, cuda.gridDim.x * per_block):
        r, p, j0, j1, valid = _item(i0, width, R, P, L)
        s = inv[r % slot_mod] if valid else 1.0
        acc = 0.0
        for j in range(j0 + lane, j1, width):
            acc = power_add(acc, abs(ld(x2[r, j]) * s), power)
        if power == math.inf:
            acc = group_max(sa, acc, width)
        else:
            acc, _ = group_sum2(sa, sb, acc, 0.0, width)
        if lane == 0 and valid:
            part[p, r] = acc


@cuda.jit
def data_grad_sums(x2, dy2, P, op, slot_mod, q0, q1, q3, c0, c1, width, pa, pb, pc, pd):
    """The four per-slot sums of a data backward pass (_reduce.grad_terms) over chunk p of
    row r into p*[p, r], the row's slot r % slot_mod."""
    sa = cuda.shared.array(THREADS, float64)
    sb = cuda.shared.array(THREADS, float64)
    R, L = x2.shape
    t = cuda.threadIdx.x
    lane = t & (width - 1)
    per_block = THREADS // width
    items = R * P
    for i0 in range(cuda.blockIdx.x * per_block, items, cuda.gridDim.x * per_block):
        r, p, j0, j1, valid = _item(i0, width, R, P, L)
        k = r % slot_mod if valid else 0
        a = 0.0
        b = 0.0
        c = 0.0
        d = 0.0
        for j in range(j0 + lane, j1, width):
            ta, tb, tc, td = grad_terms(op, ld(x2[r, j]), ld(dy2[r, j]), q0[k], q1[k], q3[k],
                                        c0, c1)
            a += ta
            b += tb
            c += tc
            d += td
        a, b = group_sum2(sa, sb, a, b, width)
        c, d = group_sum2(sa, sb, c, d, width)
        if lane == 0 and valid:
            pa[p, r] = a
            pb[p, r] = b
            pc[p, r] = c
            pd[p, r] = d


# ---------------------------------------------------------------------------------------------
# fused residual add + layer_norm / rms_norm (the twin of numbanorm.cpu.rows.add_forward and
# add_backward): the sum, then the rows kernels on it

@cuda.jit
def add_sum(x1, r1, s1, h1):
    """s = x + residual, rounded once to s's dtype (the dtype x computes in: the float64 sum of
    two values of at most that precision, rounded, is that dtype's own sum), and h = s in h's
    dtype (h may be s itself). The statistics and the backward read s: the sum before h's
    rounding."""
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, x1.shape[0],
                   cuda.gridDim.x * THREADS):
        s1[i] = ld(x1[i]) + ld(r1[i])
        h1[i] = ld(s1[i])


@cuda.jit
def add_grad(g1, dh1, with_dh, dx1, dres1):
    """dx = g + dh (with_dh; else g) into dx1 and dres1 (the residual's dtype; may be dx1)."""
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, g1.shape[0],
                   cuda.gridDim.x * THREADS):
        v = ld(g1[i])
        if with_dh:
            v += ld(dh1[i])
        dx1[i] = v
        dres1[i] = v
