"""Rows geometry on CUDA: layer_norm, rms_norm, group_norm and instance_norm as statistics
per row of an (R, L = Cg*S) matrix; element (r, j) takes the affine parameters of channel
c = (r % G)*Cg + j // S. Each row is reduced by a group of `width` consecutive threads of a
block (a power of two set by L: _host._row_width), THREADS // width rows a block; long rows take
the whole block. Grid-stride over groups of rows, one launch per op.

Forward, per row: every thread runs Welford over its strided elements (float64), the row's
group Chan-merges the triples in shared memory, then

    rstd = 1/sqrt(M2/L + eps)            (rms_norm: M2 = sum(x^2), no mean)
    y    = (x - mean)*rstd*w[c] + b[c]

A row whose M2 overflows float64 (|x| ~ 1e300) is reduced again, scaled by an exact power of
two, by the same group. Backward, per row, with xhat = (x - mean)*rstd and g = dy*w[c]:

    dx = rstd*(g - mean(g) - xhat*mean(g*xhat))      (rms_norm: no mean(g) term)

dweight/dbias are per-channel sums over rows and spatial positions: channels.column_sums.
"""
import math

from numba import cuda, float64

from ._reduce import THREADS, group_max, group_merge, group_sum2, power_of_two_below, welford


@cuda.jit(device=True)
def _row_moments(x2, r, L, centered, inv, lane, width):
    cnt = 0.0
    mean = 0.0
    m2 = 0.0
    for j in range(lane, L, width):
        v = float64(x2[r, j]) * inv
        if centered:
            cnt, mean, m2 = welford(cnt, mean, m2, v)
        else:
            cnt += 1.0
            m2 += v * v
    return cnt, mean, m2


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
        cnt, mean, m2 = _row_moments(x2, r, n_row, centered, 1.0, lane, width)
        cnt, mean, m2 = group_merge(sn, smean, sm2, cnt, mean, m2, width)
        inv = 1.0
        bad = r < R and not (math.isfinite(m2) and math.isfinite(mean))
        # Rows whose squares overflow float64 (|x| ~ 1e300) are reduced again scaled by an
        # exact power of two; the block takes that path together when any of its rows needs it.
        if cuda.syncthreads_or(1 if bad else 0):
            biggest = 0.0
            for j in range(lane, n_row, width):
                v = abs(float64(x2[r, j]))
                if v > biggest or math.isnan(v):
                    biggest = v
            biggest = group_max(sn, biggest, width)
            if bad and math.isfinite(biggest) and biggest > 0.0:
                inv = power_of_two_below(biggest)
            c2, mean2, m22 = _row_moments(x2, r, n_row, centered, inv, lane, width)
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
                y2[r, j] = (float64(x2[r, j]) - mean) * (rstd * float64(weight[c])) \
                    + float64(bias[c])


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
        sum_g = 0.0
        sum_gx = 0.0
        for j in range(lane, n_row, width):
            g = float64(dy2[r, j]) * float64(weight[c0 + j // S])
            sum_g += g
            sum_gx += g * ((float64(x2[r, j]) - m) * s)
        sum_g, sum_gx = group_sum2(sa, sb, sum_g, sum_gx, width)
        mean_g = sum_g / L if centered else 0.0
        mean_gx = sum_gx / L
        for j in range(lane, n_row, width):
            g = float64(dy2[r, j]) * float64(weight[c0 + j // S])
            xhat = (float64(x2[r, j]) - m) * s
            dx2[r, j] = s * (g - mean_g - xhat * mean_gx)
