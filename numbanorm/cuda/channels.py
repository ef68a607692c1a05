"""Channels geometry on CUDA: per-channel reductions over an (N, M = C*S) matrix, where
channel c owns columns c*S .. c*S + S - 1. Used by batch_norm (statistics, backward sums) and by
the rows geometry's dweight/dbias (sums over rows and spatial positions per channel).

    column_moments   grid (column blocks, P partitions of the rows): thread m accumulates
                     Welford (count, mean, M2) of column m over its partition's rows, in
                     float64; coalesced, since neighbouring threads read neighbouring columns.
    merge_moments    one block per channel: Chan-merges its P*S partials in a fixed order,
                     computes mean and rstd, updates the running buffers in place. A channel
                     whose M2 overflows float64 (|x| ~ 1e300) is reduced again by the same
                     block, scaled by an exact power of two.
    column_sums      as column_moments, for sum(dy) and sum(dy*xhat), xhat = (x - mean)*rstd
                     with the statistics of row n*stat_stride + c//Cg (batch_norm: stat_stride
                     0, Cg 1 -> channel c; group norm: row n*G + c//Cg).
    merge_sums       one block per channel: fixed-order sums of its P*S partials.
    affine, dx       elementwise, grid-stride:
                     y  = (x - mean[c])*rstd[c]*w[c] + b[c]
                     dx = w*rstd*(dy - sum_dy/n - xhat*sum_dyxhat/n)   (training)
                     dx = w*rstd*dy                                    (eval)

No atomics: every partial has one writer and merges in index order, so results are bitwise
identical from run to run and for any grid size.
"""
import math

from numba import cuda, float64

from ._reduce import THREADS, block_merge, block_max, block_sum2, chan_merge, data_update, \
    grad_terms, ld, power_add, power_of_two_below, welford


@cuda.jit
def column_moments(x2, rows_per, pmean, pm2):
    N, M = x2.shape
    P = pmean.shape[0]
    t = cuda.threadIdx.x
    for p in range(cuda.blockIdx.y, P, cuda.gridDim.y):
        n0 = p * rows_per
        n1 = min(N, n0 + rows_per)
        for m in range(cuda.blockIdx.x * THREADS + t, M, cuda.gridDim.x * THREADS):
            cnt = 0.0
            mean = 0.0
            m2 = 0.0
            for n in range(n0, n1):
                cnt, mean, m2 = welford(cnt, mean, m2, ld(x2[n, m]))
            pmean[p, m] = mean
            pm2[p, m] = m2


@cuda.jit
def merge_moments(pmean, pm2, rows_per, S, x2, eps, momentum, update, running_mean,
                  running_var, mean_out, rstd_out):
    sn = cuda.shared.array(THREADS, float64)
    smean = cuda.shared.array(THREADS, float64)
    sm2 = cuda.shared.array(THREADS, float64)
    N = x2.shape[0]
    P = pmean.shape[0]
    C = mean_out.shape[0]
    t = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        cnt = 0.0
        mean = 0.0
        m2 = 0.0
        for k in range(t, P * S, THREADS):
            p = k // S
            m = c * S + k % S
            rows = float64(min(N, (p + 1) * rows_per) - p * rows_per)
            cnt, mean, m2 = chan_merge(cnt, mean, m2, rows, pmean[p, m], pm2[p, m])
        cnt, mean, m2 = block_merge(sn, smean, sm2, cnt, mean, m2)
        inv = 1.0
        if not (math.isfinite(m2) and math.isfinite(mean)):
            biggest = 0.0
            for k in range(t, N * S, THREADS):
                v = abs(ld(x2[k // S, c * S + k % S]))
                if v > biggest or math.isnan(v):
                    biggest = v
            biggest = block_max(sn, biggest)
            if math.isfinite(biggest) and biggest > 0.0:
                inv = power_of_two_below(biggest)
                cnt = 0.0
                mean = 0.0
                m2 = 0.0
                for k in range(t, N * S, THREADS):
                    cnt, mean, m2 = welford(cnt, mean, m2,
                                            ld(x2[k // S, c * S + k % S]) * inv)
                cnt, mean, m2 = block_merge(sn, smean, sm2, cnt, mean, m2)
        if t == 0:
            var_scaled = m2 / cnt
            mean_out[c] = mean / inv
            rstd_out[c] = inv / math.sqrt(var_scaled + eps * inv * inv)
            if update:
                unbiased = var_scaled / (inv * inv) * (cnt / (cnt - 1.0))
                running_mean[c] = (1.0 - momentum) * ld(running_mean[c]) \
                    + momentum * (mean / inv)
                running_var[c] = (1.0 - momentum) * ld(running_var[c]) + momentum * unbiased


@cuda.jit
def column_sums(dy2, x2, mean, rstd, stat_stride, Cg, S, rows_per, pdy, pdyx):
    N, M = x2.shape
    P = pdy.shape[0]
    t = cuda.threadIdx.x
    for p in range(cuda.blockIdx.y, P, cuda.gridDim.y):
        n0 = p * rows_per
        n1 = min(N, n0 + rows_per)
        for m in range(cuda.blockIdx.x * THREADS + t, M, cuda.gridDim.x * THREADS):
            group = (m // S) // Cg
            a = 0.0
            b = 0.0
            for n in range(n0, n1):
                i = n * stat_stride + group
                g = ld(dy2[n, m])
                a += g
                b += g * ((ld(x2[n, m]) - mean[i]) * rstd[i])
            pdy[p, m] = a
            pdyx[p, m] = b


@cuda.jit
def merge_sums(pdy, pdyx, S, sum_dy, sum_dyx):
    sa = cuda.shared.array(THREADS, float64)
    sb = cuda.shared.array(THREADS, float64)
    P = pdy.shape[0]
    C = sum_dy.shape[0]
    t = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        a = 0.0
        b = 0.0
        for k in range(t, P * S, THREADS):
            m = c * S + k % S
            a += pdy[k // S, m]
            b += pdyx[k // S, m]
        a, b = block_sum2(sa, sb, a, b)
        if t == 0:
            sum_dy[c] = a
            sum_dyx[c] = b


@cuda.jit
def affine(x1, C, S, mean, rstd, weight, bias, y1):
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, x1.shape[0],
                   cuda.gridDim.x * THREADS):
        c = (i // S) % C
        a = rstd[c] * ld(weight[c])
        y1[i] = (ld(x1[i]) - mean[c]) * a + ld(bias[c])


@cuda.jit
def dx(dy1, x1, C, S, mean, rstd, weight, sum_dy, sum_dyx, count, training, dx1):
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, x1.shape[0],
                   cuda.gridDim.x * THREADS):
        c = (i // S) % C
        k1 = ld(weight[c]) * rstd[c]
        g = ld(dy1[i])
        if training:
            xhat = (ld(x1[i]) - mean[c]) * rstd[c]
            g = g - sum_dy[c] / count - xhat * (sum_dyx[c] / count)
        dx1[i] = k1 * g


@cuda.jit
def cast(src, dst):
    """dst[i] = src[i] in dst's dtype (statistics and gradients leave float64 here)."""
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, src.shape[0],
                   cuda.gridDim.x * THREADS):
        dst[i] = src[i]


@cuda.jit
def running_stats(running_mean, running_var, eps, mean_out, rstd_out):
    """Eval mode: normalise with the running statistics, rstd = 1/sqrt(running_var + eps)."""
    for c in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, mean_out.shape[0],
                   cuda.gridDim.x * THREADS):
        mean_out[c] = ld(running_mean[c])
        rstd_out[c] = 1.0 / math.sqrt(ld(running_var[c]) + eps)


@cuda.jit
def instance_running_update(mean, rstd, N, S, eps, momentum, running_mean, running_var):
    """instance_norm's running buffers (PyTorch's rule): the mean over the batch of each
    instance's mean and unbiased variance, summed over n in order."""
    C = running_mean.shape[0]
    for c in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, C, cuda.gridDim.x * THREADS):
        m = 0.0
        v = 0.0
        for n in range(N):
            m += mean[n * C + c]
            v += 1.0 / (rstd[n * C + c] * rstd[n * C + c]) - eps
        m /= N
        v = v / N * (S / (S - 1.0))
        running_mean[c] = (1.0 - momentum) * ld(running_mean[c]) + momentum * m
        running_var[c] = (1.0 - momentum) * ld(running_var[c]) + momentum * v


# ---------------------------------------------------------------------------------------------
# data normalization: the statistics of columns (the column slots of an (A, N, M) array, slot
# a*M + m), the merges of partials for both geometries, and the elementwise passes

@cuda.jit
def data_column_moments(x3, rows_per, omit, pn, pmean, pm2, plo, phi, pnan):
    """Partial statistics of column slot q = a*M + m over the rows of partition p into
    p*[p, q]: as rows._data_values (thread per slot, coalesced)."""
    A, N, M = x3.shape
    P = pn.shape[0]
    t = cuda.threadIdx.x
    for p in range(cuda.blockIdx.y, P, cuda.gridDim.y):
        n0 = p * rows_per
        n1 = min(N, n0 + rows_per)
        for q in range(cuda.blockIdx.x * THREADS + t, A * M, cuda.gridDim.x * THREADS):
            a = q // M
            m = q % M
            cnt = 0.0
            mean = 0.0
            m2 = 0.0
            lo = math.inf
            hi = -math.inf
            nans = 0.0
            for n in range(n0, n1):
                cnt, mean, m2, lo, hi, nans = data_update(cnt, mean, m2, lo, hi, nans,
                                                          ld(x3[a, n, m]), omit)
            pn[p, q] = cnt
            pmean[p, q] = mean
            pm2[p, q] = m2
            plo[p, q] = lo
            phi[p, q] = hi
            pnan[p, q] = nans


@cuda.jit
def data_column_norms(x3, rows_per, power, inv, part):
    """sum(|x*inv[q]|^power) (power = inf: max |x|) of column slot q over the rows of
    partition p into part[p, q]."""
    A, N, M = x3.shape
    P = part.shape[0]
    t = cuda.threadIdx.x
    for p in range(cuda.blockIdx.y, P, cuda.gridDim.y):
        n0 = p * rows_per
        n1 = min(N, n0 + rows_per)
        for q in range(cuda.blockIdx.x * THREADS + t, A * M, cuda.gridDim.x * THREADS):
            a = q // M
            m = q % M
            s = inv[q]
            acc = 0.0
            for n in range(n0, n1):
                acc = power_add(acc, abs(ld(x3[a, n, m]) * s), power)
            part[p, q] = acc


@cuda.jit
def merge_data(pn, pmean, pm2, plo, phi, pnan, count, mean, m2, lo, hi, nans):
    """The (K, M) partials merged over K in order into (M,) statistics (Chan; min, max; NaN
    counts added), a thread per slot."""
    K, M = pn.shape
    for j in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, M, cuda.gridDim.x * THREADS):
        c = 0.0
        mu = 0.0
        q = 0.0
        a = math.inf
        b = -math.inf
        z = 0.0
        for k in range(K):
            c, mu, q = chan_merge(c, mu, q, pn[k, j], pmean[k, j], pm2[k, j])
            a = min(a, plo[k, j])
            b = max(b, phi[k, j])
            z += pnan[k, j]
        count[j] = c
        mean[j] = mu
        m2[j] = q
        lo[j] = a
        hi[j] = b
        nans[j] = z


@cuda.jit
def merge_norms(part, power, out):
    """The (K, M) partial power sums added over K in order (power = inf: max, NaN
    propagating) into out (M,)."""
    K, M = part.shape
    for j in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, M, cuda.gridDim.x * THREADS):
        acc = 0.0
        for k in range(K):
            acc = power_add(acc, part[k, j], 1.0 if power != math.inf else power)
        out[j] = acc


@cuda.jit(device=True, inline=True)
def _slot(i, sizes, slot_strides):
    """The statistics slot of flat index i of an array whose axes are the runs `sizes` (x's
    shape with size-1 axes dropped and neighbours of one kind merged); slot_strides: the kept
    runs' strides in the slots (C order over the kept axes), 0 for the reduced runs."""
    s = 0
    for k in range(sizes.shape[0] - 1, -1, -1):
        n = sizes[k]
        s += (i % n) * slot_strides[k]
        i //= n
    return s


@cuda.jit
def data_affine(x1, sizes, slot_strides, mean, scale, shift, y1):
    """y = (x - mean[s])*scale[s] + shift[s] elementwise in float64 over x in its own order
    (any layout, interleaved axes included: no copy), s the slot of each element."""
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, x1.shape[0],
                   cuda.gridDim.x * THREADS):
        s = _slot(i, sizes, slot_strides)
        y1[i] = (ld(x1[i]) - mean[s]) * scale[s] + shift[s]


@cuda.jit
def permute(x1, shape, strides, out1):
    """out = x transposed, C-contiguous: element i of out (shape `shape`, C order) is x's
    element at sum(index_k * strides[k]) (x's element strides in out's axis order)."""
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, out1.shape[0],
                   cuda.gridDim.x * THREADS):
        q = i
        src = 0
        for k in range(shape.shape[0] - 1, -1, -1):
            n = shape[k]
            src += (q % n) * strides[k]
            q //= n
        out1[i] = x1[src]


@cuda.jit
def data_column_grad_sums(x3, dy3, rows_per, op, q0, q1, q3, c0, c1, pa, pb, pc, pd):
    """The four per-slot sums of a data backward pass (_reduce.grad_terms) of column slot
    q = a*M + m over the rows of partition p into p*[p, q]."""
    A, N, M = x3.shape
    P = pa.shape[0]
    t = cuda.threadIdx.x
    for p in range(cuda.blockIdx.y, P, cuda.gridDim.y):
        n0 = p * rows_per
        n1 = min(N, n0 + rows_per)
        for q in range(cuda.blockIdx.x * THREADS + t, A * M, cuda.gridDim.x * THREADS):
            a = q // M
            m = q % M
            sa = 0.0
            sb = 0.0
            sc = 0.0
            sd = 0.0
            for n in range(n0, n1):
                ta, tb, tc, td = grad_terms(op, ld(x3[a, n, m]), ld(dy3[a, n, m]), q0[q],
                                            q1[q], q3[q], c0, c1)
                sa += ta
                sb += tb
                sc += tc
                sd += td
            pa[p, q] = sa
            pb[p, q] = sb
            pc[p, q] = sc
            pd[p, q] = sd


@cuda.jit(device=True, inline=True)
def _sign(v):
    if math.isnan(v):
        return v
    return 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)


@cuda.jit
def data_dx(op, x1, dy1, sizes, slot_strides, q0, q1, q2, q3, s0, s1, s2, s3, c0, c1, dx1):
    """dx of a data function elementwise over x in its own order, from the slot's parameters q
    and sums s (see numbanorm.scaling for the formulas; _reduce.grad_terms for the sums):

        op 0, zscore        dx = inv*(g - s0/n - y*s1/(n - ddof)), q = (mean, inv, n, -),
                            c = (omit, ddof); NaN where x is NaN with omit
        op 1, minmax_scale  dx = s*g + [x == min]*g_min/s2 + [x == max]*g_max/s3, g_min =
                            -s*(s0 - s1) (s0 where the range counts as zero), g_max = -s*s1 (0
                            there), q = (min, max, s, zero); NaN where x is NaN
        op 2, normalize     dx = g/N + gN*dN (g/eps where N < eps), gN = -s0/N^2, dN = dN/dx,
                            q = (N, -, -, -), c = (eps, p)
        op 3, the mixing ops dx = g*q0 + (x - q1)*q2 + q3 (numbanorm.adaptive; no sums)
    """
    for i in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, x1.shape[0],
                   cuda.gridDim.x * THREADS):
        k = _slot(i, sizes, slot_strides)
        v = ld(x1[i])
        g = ld(dy1[i])
        if op == 3:
            dx1[i] = g * q0[k] + (v - q1[k]) * q2[k] + q3[k]
        elif op == 0:
            n = q2[k]
            if c0 != 0.0 and math.isnan(v):
                dx1[i] = math.nan
            else:
                y = (v - q0[k]) * q1[k]
                dx1[i] = q1[k] * (g - s0[k] / n - y * (s1[k] / (n - c1)))
        elif op == 1:
            if math.isnan(v):
                dx1[i] = math.nan
            else:
                s = q2[k]
                zero = q3[k] != 0.0
                g_min = -s * (s0[k] if zero else s0[k] - s1[k])
                g_max = 0.0 if zero else -s * s1[k]
                r = s * g
                if v == q0[k]:
                    r += g_min / s2[k]
                if v == q1[k]:
                    r += g_max / s3[k]
                dx1[i] = r
        else:
            N = q0[k]
            power = c1
            if N >= c0:
                gN = -s0[k] / (N * N)
                a = abs(v)
                if power == math.inf:
                    dN = _sign(v) / s1[k] if (a == N or math.isnan(a)) else 0.0
                elif power == 2.0:
                    dN = v / N
                elif power == 1.0:
                    dN = _sign(v)
                elif power < 1.0 and v == 0.0:
                    dN = 0.0
                else:
                    dN = _sign(v) * a ** (power - 1.0) / N ** (power - 1.0)
                if N == 0.0:
                    dN = 0.0
                dx1[i] = g / N + gN * dN
            else:
                dx1[i] = g / c0
