"""Rows geometry: layer_norm, rms_norm, group_norm, instance_norm.

x is viewed as (R, L) with L = Cg*S: row r is one normalisation group of L contiguous values,
made of Cg channels of S values each. The affine parameters of element (r, j*S + s) are
weight[c], bias[c] with c = (r % G)*Cg + j:

    layer_norm / rms_norm  R = prod(leading dims), Cg = prod(normalized_shape), S = 1, G = 1
    group_norm             R = N*G, Cg = C/G, S = prod(spatial)
    instance_norm          group_norm with G = C

Forward, per row:  mean, var from blocked Welford/Chan (rms: mean = 0, var = mean(x^2));
                   rstd = 1/sqrt(var + eps);  y = (x - mean)*rstd*w[c] + b[c]
Backward, per row, with xhat = (x - mean)*rstd and g = dy*w[c]:
                   dx = rstd*(g - mean(g) - xhat*mean(g*xhat))    (rms: no mean(g) term)
                   dw[c] += sum(dy*xhat),  db[c] += sum(dy)       (per-chunk partial rows)

Sums run in x's dtype over blocks of at most BLOCK values, blocks and rows are combined in
float64, elementwise arithmetic is in x's dtype (see _moments). The row is read from memory
once per pass, the second pass of a row hits cache. Each kernel has a parallel driver and a
serial one for small inputs. The forward kernels compile without the rare paths of
_moments.moments: a row that needs them (a float32 sum or square past float32's range or below
its precision, float64 squares that overflow, non-finite data) is marked (rstd 0, y not
written, so x is intact where y is x) and computed again by forward_redo (add_forward_redo),
compiled on first need. Long layer_norm and rms_norm rows (ROW_PAIR_MIN_BYTES) go two at
a time, forward and backward (forward_pairs, backward_pairs): each weight and bias value is
then loaded once for both rows.

dweight/dbias partial rows come in two forms, chosen by the caller through their dtype:
- in x's dtype (float32 S == 1 rows, and every backward_pairs call): a row's dy*xhat and dy
  are added to its chunk's partial row in the loop that first reads the row for sum(g) and
  sum(g*xhat). The caller cuts the rows into chunks of at most BLOCK rows, so that an x-dtype
  sum covers at most BLOCK values, as everywhere, and merges the chunks in float64.
- in float64 (float64 rows, S > 1, the serial kernel): four rows at a time are re-read from
  cache after their dx pass's sums (_param_rows); S > 1 rows add their per-channel sums.
"""
import types

import numpy as np
from numba import njit, prange

from .._config import BACKWARD_JIT, BLOCK, ELEMENTWISE_JIT, JIT
from ._half import ld, st
from ._moments import (at, borrowed, chan_merge, data_block, data_range, grad_sums, like,
                       moments, narrow, parallel_and_serial, power_combine, power_sum, rstd_of,
                       split_mean, work)

SERIAL = types.SimpleNamespace()  # the serial twins (see _moments.parallel_and_serial)


@njit(inline='always', **JIT)
def _affine(xs, mean, rstd, w, b, ys):
    """ys = (xs - mean)*rstd*w + b elementwise, w and b arrays (per element) or scalars, all in
    xs's dtype (rstd a scalar of that dtype; see split_mean)."""
    mh, lo = split_mean(rstd, mean)
    for j in range(xs.size):
        ys[j] = st(ys, ((ld(xs[j]) - mh) * rstd - lo) * at(w, j) + at(b, j))


@njit(inline='always', **JIT)
def _forward_row(x, r, G, S, weight, bias, eps, centered, y, mean_out, rstd_out, redo):
    """Row r's y, mean and rstd; returns 1 for a row marked for forward_redo (redo None and
    the row needs the rare paths of _moments.moments: rstd_out[r] = 0, y[r] not written, so
    x[r] is intact where y is x), else 0."""
    # Inner loops run 0-based over slices so that they vectorise (see _moments.block_moments).
    L = x.shape[1]
    x, y, weight, bias = borrowed(x), borrowed(y), borrowed(weight), borrowed(bias)
    xr = x[r]
    yr = y[r]
    mean, var_scaled, inv = moments(xr, centered, redo)
    if inv == 0.0:
        rstd_out[r] = 0.0
        return 1
    rstd = rstd_of(var_scaled, inv, eps)
    mean_out[r] = mean
    rstd_out[r] = rstd
    zero = like(xr, 0.0)
    if S == 1:
        c0 = (r % G) * L
        _affine(xr, mean, like(zero, rstd), weight[c0:c0 + L], bias[c0:c0 + L], yr)
    else:
        Cg = L // S
        c0 = (r % G) * Cg
        for j in range(Cg):
            sl = slice(j * S, (j + 1) * S)
            # rstd*w rounded once per channel; the loop's *1 is exact
            _affine(xr[sl], mean, like(zero, rstd * weight[c0 + j]), like(zero, 1.0),
                    bias[c0 + j], yr[sl])
    return 0


@njit(parallel=True, **JIT)
def forward(x, G, S, weight, bias, eps, centered, y, mean_out, rstd_out, marked):
    """y, mean, rstd of every row (see the module docstring); parallel over rows. Its body is
    inlined, not a compiled function shared with forward_serial as the backward's is: shared,
    it compiled no faster for a first forward (3.8 s either way, scripts/first_call.py) and
    took 4-9% longer on short rows ((16384, 128): 0.92x, (64, 1024): 0.94x, scripts/ab.py).
    marked[0] is set to 1 when a row is marked for forward_redo (see _forward_row; a count
    returned as a parallel reduction cost 0.25 s of compile time, np.all over the rows 1.3 us
    of a (64, 1024) call)."""
    for r in prange(x.shape[0]):
        if _forward_row(x, r, G, S, weight, bias, eps, centered, y, mean_out, rstd_out, None):
            marked[0] = 1


@njit(inline='always', **JIT)
def _forward_pair(x, ra, rb, weight, bias, eps, centered, y, mean_out, rstd_out):
    """_forward_row for rows ra and rb (rb may be ra) of parameters per element (S == 1,
    G == 1), their affine in one loop: each weight and bias value is loaded once for both rows.
    Same arithmetic per element as _affine (measured: the same bits as `forward`, both kernels
    loaded from the cache). Returns 1 when a row was marked for forward_redo (see
    _forward_row); the other row of the pair is then computed alone, as a row paired with
    itself is, so its bits do not depend on its neighbour's data. A row paired with itself (an
    odd last row, or the partner of a marked row) writes its second copy to scratch: y may be
    x, and the loop reads xb[j] after it writes ya[j]."""
    x, y, weight, bias = borrowed(x), borrowed(y), borrowed(weight), borrowed(bias)
    ma, va, ia = moments(x[ra], centered, None)
    mb, vb, ib = moments(x[rb], centered, None)
    marked = 0
    if ia == 0.0:
        rstd_out[ra] = 0.0
        marked = 1
        ra, ma, va, ia = rb, mb, vb, ib
    if ib == 0.0:
        rstd_out[rb] = 0.0
        marked = 1
        rb, mb, vb, ib = ra, ma, va, ia
    if ia == 0.0:
        return marked
    xa, xb, ya = x[ra], x[rb], y[ra]
    yb = y[rb] if rb != ra else np.empty_like(ya)
    sa = rstd_of(va, ia, eps)
    sb = rstd_of(vb, ib, eps)
    mean_out[ra] = ma
    rstd_out[ra] = sa
    mean_out[rb] = mb
    rstd_out[rb] = sb
    fa = like(xa, sa)
    fb = like(xa, sb)
    mha, loa = split_mean(fa, ma)
    mhb, lob = split_mean(fb, mb)
    for j in range(xa.size):
        wj = weight[j]
        bj = bias[j]
        ya[j] = st(ya, ((ld(xa[j]) - mha) * fa - loa) * wj + bj)
        yb[j] = st(yb, ((ld(xb[j]) - mhb) * fb - lob) * wj + bj)
    return marked


@njit(parallel=True, **JIT)
def forward_pairs(x, weight, bias, eps, centered, y, mean_out, rstd_out, marked):
    """`forward` for S == 1, G == 1 (layer_norm, rms_norm) and long rows (ROW_PAIR_MIN_BYTES),
    parallel over pairs of rows; an odd last row is paired with itself. A kernel of its own, so
    that it compiles only when such rows come (within `forward`, its second parallel loop
    took that kernel's compile from 6 s to 16 s)."""
    R = x.shape[0]
    for p in prange((R + 1) // 2):
        if _forward_pair(x, 2 * p, min(2 * p + 1, R - 1), weight, bias, eps, centered, y,
                         mean_out, rstd_out):
            marked[0] = 1


@njit(**JIT)
def forward_serial(x, G, S, weight, bias, eps, centered, y, mean_out, rstd_out):
    """`forward` on one thread, for inputs too small to pay for a parallel region; returns
    the number of rows marked for forward_redo."""
    marked = 0
    for r in range(x.shape[0]):
        marked += _forward_row(x, r, G, S, weight, bias, eps, centered, y, mean_out, rstd_out,
                               None)
    return marked


@njit(**JIT)
def forward_redo(x, marked, G, S, weight, bias, eps, centered, y, mean_out, rstd_out):
    """`forward` of the rows `marked` by the common kernels (forward, forward_serial,
    forward_pairs), with the rare paths of _moments.moments: compiled on the first input that
    needs them (an overflowing float32 sum, a float32 block not exact enough, float64 squares
    that overflow, non-finite data). The common kernels' code with those paths compiled in
    (a compiled function of its own: its loops may round in other last bits than theirs)."""
    for i in range(marked.size):
        _forward_row(x, marked[i], G, S, weight, bias, eps, centered, y, mean_out, rstd_out,
                     True)


@njit(inline='always', **JIT)
def _dx(xs, ds, mh, rstd, lo, w, mean_g, mean_gx, dxs):
    """dx = rstd*(dy*w - mean_g - xhat*mean_gx) elementwise (w an array or a scalar), all in
    x's dtype (xhat as in _affine); rstd multiplies the bracket, never xhat*mean_gx alone, so no
    rstd^2 constant is formed (it underflows for |x| ~ 1e300). dy*w is rounded before mean_g
    is subtracted (the kernels are compiled without 'contract'), as it was when summed into
    mean_g: a group of one value gets dx exactly 0."""
    for j in range(xs.size):
        xh = (ld(xs[j]) - mh) * rstd - lo
        dxs[j] = st(dxs, rstd * ((ld(ds[j]) * at(w, j) - mean_g) - xh * mean_gx))


@njit(inline='always', **JIT)
def _xhat(x, mean, rstd, centered, r, zero):
    """(x[r], mh, rstd, lo) of row r in x's dtype: xhat = (x - mh)*rstd - lo (see _affine)."""
    rs = like(zero, rstd[r])
    mh, lo = split_mean(rs, mean[r] if centered else 0.0)
    return x[r], mh, rs, lo


@njit(inline='always', **JIT)
def _param_rows(x, dy, r0, r1, mean, rstd, centered, dwk, dbk, zero):
    """dwk += sum(dy*xhat), dbk += sum(dy) over rows r0:r1 (at most four) of the same
    parameters. Four rows share one load and store of each partial (the loops are bound by
    those accesses); the four products are summed in x's dtype, the partials in float64. Two
    loops, not one: each touches few enough arrays to vectorise."""
    if r1 - r0 == 4:
        x0, m0, s0, l0 = _xhat(x, mean, rstd, centered, r0, zero)
        x1, m1, s1, l1 = _xhat(x, mean, rstd, centered, r0 + 1, zero)
        x2, m2, s2, l2 = _xhat(x, mean, rstd, centered, r0 + 2, zero)
        x3, m3, s3, l3 = _xhat(x, mean, rstd, centered, r0 + 3, zero)
        d0, d1, d2, d3 = dy[r0], dy[r0 + 1], dy[r0 + 2], dy[r0 + 3]
        for j in range(dwk.size):
            dwk[j] += float((ld(d0[j]) * ((ld(x0[j]) - m0) * s0 - l0)
                             + ld(d1[j]) * ((ld(x1[j]) - m1) * s1 - l1))
                            + (ld(d2[j]) * ((ld(x2[j]) - m2) * s2 - l2)
                               + ld(d3[j]) * ((ld(x3[j]) - m3) * s3 - l3)))
        for j in range(dbk.size):
            dbk[j] += float((ld(d0[j]) + ld(d1[j])) + (ld(d2[j]) + ld(d3[j])))
        return
    for r in range(r0, r1):
        xr, mh, rs, lo = _xhat(x, mean, rstd, centered, r, zero)
        dyr = dy[r]
        for j in range(dwk.size):
            dwk[j] += float(ld(dyr[j]) * ((ld(xr[j]) - mh) * rs - lo))
        for j in range(dbk.size):
            dbk[j] += float(ld(dyr[j]))


@njit(inline='always', **JIT)
def _chunk_rows(R, k, nchunks, step):
    """Rows start:stop of chunk k of nchunks: ceil(R/nchunks) rows each, rounded up to a
    multiple of step."""
    per = ((R + nchunks - 1) // nchunks + step - 1) // step * step
    return min(R, k * per), min(R, (k + 1) * per)


@njit(inline='always', **JIT)
def _param_sums(xr, dyr, mh, rs, lo, w, dw, db, c0):
    """grad_sums of one row (w its per-element weights), and its dweight/dbias terms
    dw[c0:] += dy*xhat, db[c0:] += dy added to the x-dtype partials dw, db in the same loop."""
    # dw, db sliced once, from the partial row itself: slices of a slice measured 1.2x the
    # time of the whole backward on (16384, 128)
    sum_g = 0.0
    sum_gx = 0.0
    for b0 in range(0, xr.size, BLOCK):
        b1 = min(b0 + BLOCK, xr.size)
        xs, ds, ws = xr[b0:b1], dyr[b0:b1], w[b0:b1]
        dws, dbs = dw[c0 + b0:c0 + b1], db[c0 + b0:c0 + b1]
        sg = like(rs, 0.0)
        sgx = like(rs, 0.0)
        for j in range(b1 - b0):
            xh = (ld(xs[j]) - mh) * rs - lo
            g = ld(ds[j]) * ws[j]
            sg += g
            sgx += g * xh
            dws[j] += ld(ds[j]) * xh  # (dy read again, not kept: see _pair_sums)
            dbs[j] += ld(ds[j])
        sum_g += float(sg)
        sum_gx += float(sgx)
    return sum_g, sum_gx


@njit(**BACKWARD_JIT)
def _backward_chunk(dy, x, mean, rstd, G, S, weight, centered, want_params, k, nchunks, dx,
                    dw_part, db_part):
    R, L = x.shape
    Cg = L // S
    x, dy, dx, weight = borrowed(x), borrowed(dy), borrowed(dx), borrowed(weight)
    dw_part, db_part = borrowed(dw_part), borrowed(db_part)
    zero = like(x, 0.0)
    one = like(x, 1.0)
    start, stop = _chunk_rows(R, k, nchunks, 1)
    dw_part[k, :] = 0.0
    db_part[k, :] = 0.0
    for r in range(start, stop):
        xr, mh, rs, lo = _xhat(x, mean, rstd, centered, r, zero)
        dyr = dy[r]
        dxr = dx[r]
        c0 = (r % G) * Cg
        if S == 1 and want_params and narrow(dw_part):
            # x-dtype (float32) partial rows: the row's parameter terms in its first read
            # (see the module docstring)
            sum_g, sum_gx = _param_sums(xr, dyr, mh, rs, lo, weight[c0:c0 + L], dw_part[k],
                                        db_part[k], c0)
        elif S == 1:
            sum_g, sum_gx = grad_sums(xr, dyr, mh, rs, lo, weight[c0:c0 + L])
            if want_params:
                # Rows sharing their parameters (G == 1: layer_norm, rms_norm) four at a
                # time, at the fourth row of each four, while the four are still in cache.
                if G > 1:
                    r0 = r
                elif (r - start) % 4 == 3 or r == stop - 1:
                    r0 = r - (r - start) % 4
                else:
                    r0 = -1
                if r0 >= 0:
                    _param_rows(x, dy, r0, r + 1, mean, rstd, centered,
                                dw_part[k, c0:c0 + L], db_part[k, c0:c0 + L], zero)
        else:
            sum_g = 0.0
            sum_gx = 0.0
            for j in range(Cg):
                sl = slice(j * S, (j + 1) * S)
                s_dy, s_dyx = grad_sums(xr[sl], dyr[sl], mh, rs, lo, one)
                wj = float(weight[c0 + j])
                sum_g += wj * s_dy
                sum_gx += wj * s_dyx
                if want_params:
                    dw_part[k, c0 + j] += s_dyx
                    db_part[k, c0 + j] += s_dy
        mean_g = like(zero, sum_g / L if centered else 0.0)
        mean_gx = like(zero, sum_gx / L)
        if S == 1:
            _dx(xr, dyr, mh, rs, lo, weight[c0:c0 + L], mean_g, mean_gx, dxr)
        else:
            for j in range(Cg):
                sl = slice(j * S, (j + 1) * S)
                _dx(xr[sl], dyr[sl], mh, rs, lo, weight[c0 + j], mean_g, mean_gx, dxr[sl])


@njit(parallel=True, **BACKWARD_JIT)
def backward(dy, x, mean, rstd, G, S, weight, centered, want_params, dx, dw_part, db_part):
    """dx of every row, and per-chunk partial dweight/dbias rows (dw_part, db_part: (K, C),
    any contents, each chunk zeroes its row; K fixed by the shape; float64, or float32 for
    float32 S == 1 rows, see the module docstring); parallel over the K chunks of consecutive
    rows."""
    nchunks = dw_part.shape[0]
    for k in prange(nchunks):
        _backward_chunk(borrowed(dy), borrowed(x), borrowed(mean), borrowed(rstd), G, S,
                        borrowed(weight), centered, want_params, np.intp(k), nchunks,
                        borrowed(dx), borrowed(dw_part), borrowed(db_part))


@njit(**BACKWARD_JIT)
def backward_serial(dy, x, mean, rstd, G, S, weight, centered, want_params, dx, dw_part,
                    db_part):
    """`backward` on one thread."""
    nchunks = dw_part.shape[0]
    for k in range(nchunks):
        _backward_chunk(dy, x, mean, rstd, G, S, weight, centered, want_params, k, nchunks,
                        dx, dw_part, db_part)


@njit(inline='always', **JIT)
def _pair_sums(xa, da, mha, sa, loa, xb, db, mhb, sb, lob, w, want_params, dw, dbias):
    """grad_sums of rows a and b in one loop (each weight value loaded once for both); with
    want_params the two rows' parameter terms are added to the x-dtype partials dw, dbias too
    (their sum: one load and store per pair)."""
    ga = 0.0
    gxa = 0.0
    gb = 0.0
    gxb = 0.0
    for b0 in range(0, xa.size, BLOCK):
        b1 = min(b0 + BLOCK, xa.size)
        xa_, da_, xb_, db_, w_ = xa[b0:b1], da[b0:b1], xb[b0:b1], db[b0:b1], w[b0:b1]
        dw_, dbias_ = dw[b0:b1], dbias[b0:b1]
        s1 = like(sa, 0.0)
        s2 = like(sa, 0.0)
        s3 = like(sa, 0.0)
        s4 = like(sa, 0.0)
        if want_params:
            for j in range(b1 - b0):
                xha = (ld(xa_[j]) - mha) * sa - loa
                xhb = (ld(xb_[j]) - mhb) * sb - lob
                wj = w_[j]
                g = ld(da_[j]) * wj
                h = ld(db_[j]) * wj
                s1 += g
                s2 += g * xha
                s3 += h
                s4 += h * xhb
                # (the loads written again, not kept in locals: with locals LLVM summed
                # s1..s4 in another order, and dx came out a bit off the earlier kernel's)
                dw_[j] += ld(da_[j]) * xha + ld(db_[j]) * xhb
                dbias_[j] += ld(da_[j]) + ld(db_[j])
        else:
            for j in range(b1 - b0):
                wj = w_[j]
                g = ld(da_[j]) * wj
                h = ld(db_[j]) * wj
                s1 += g
                s2 += g * ((ld(xa_[j]) - mha) * sa - loa)
                s3 += h
                s4 += h * ((ld(xb_[j]) - mhb) * sb - lob)
        ga += float(s1)
        gxa += float(s2)
        gb += float(s3)
        gxb += float(s4)
    return ga, gxa, gb, gxb


@njit(inline='always', **JIT)
def _backward_single(dy, x, mean, rstd, weight, centered, want_params, r, dx, dwk, dbk):
    """The dx of row r alone (S == 1, G == 1), its parameter terms added to the x-dtype
    partials dwk, dbk as in _backward_pair: the odd last row of backward_pairs."""
    L = x.shape[1]
    zero = like(x, 0.0)
    xr, mh, rs, lo = _xhat(x, mean, rstd, centered, r, zero)
    if want_params:
        sum_g, sum_gx = _param_sums(xr, dy[r], mh, rs, lo, weight, dwk, dbk, 0)
    else:
        sum_g, sum_gx = grad_sums(xr, dy[r], mh, rs, lo, weight)
    _dx(xr, dy[r], mh, rs, lo, weight, like(zero, sum_g / L if centered else 0.0),
        like(zero, sum_gx / L), dx[r])


@njit(inline='always', **JIT)
def _backward_pair(dy, x, mean, rstd, weight, centered, want_params, ra, dx, dwk, dbk):
    """dx of rows ra and ra + 1 (S == 1, G == 1), both rows in each loop; their parameter
    terms added to the x-dtype partials dwk, dbk (any dtype: the pairs' partial traffic is
    half a single row's)."""
    L = x.shape[1]
    zero = like(x, 0.0)
    xa, mha, sa, loa = _xhat(x, mean, rstd, centered, ra, zero)
    xb, mhb, sb, lob = _xhat(x, mean, rstd, centered, ra + 1, zero)
    da, db, oa, ob = dy[ra], dy[ra + 1], dx[ra], dx[ra + 1]
    ga, gxa, gb, gxb = _pair_sums(xa, da, mha, sa, loa, xb, db, mhb, sb, lob, weight,
                                  want_params, dwk, dbk)
    mga = like(zero, ga / L if centered else 0.0)
    mgb = like(zero, gb / L if centered else 0.0)
    mxa = like(zero, gxa / L)
    mxb = like(zero, gxb / L)
    for j in range(L):
        wj = weight[j]
        xha = (ld(xa[j]) - mha) * sa - loa
        oa[j] = st(oa, sa * ((ld(da[j]) * wj - mga) - xha * mxa))
        xhb = (ld(xb[j]) - mhb) * sb - lob
        ob[j] = st(ob, sb * ((ld(db[j]) * wj - mgb) - xhb * mxb))


@njit(parallel=True, **BACKWARD_JIT)
def backward_pairs(dy, x, mean, rstd, weight, centered, want_params, dx, dw_part, db_part):
    """`backward` for S == 1, G == 1 (layer_norm, rms_norm) and long rows (ROW_PAIR_MIN_BYTES):
    each chunk's rows two at a time (chunks of an even number of rows; an odd last row alone),
    so that the weight is loaded once for both rows. A kernel of its own, compiled only when
    such rows come (as forward_pairs).

    dweight/dbias: partial rows dw_part, db_part ((K, C), any contents) in x's dtype, for
    float64 rows too (see the module docstring): a pair adds its two rows' terms to them in
    one load and store. On (4096, 4096) float32 these fused sums took the pairs kernel from
    9.5 to 8.6 ms against _param_rows' float64 form (medians of 60 interleaved runs; 1.13x,
    interquartile 1.11-1.17)."""
    nchunks = dw_part.shape[0]
    for k in prange(nchunks):
        _pairs_chunk(borrowed(dy), borrowed(x), borrowed(mean), borrowed(rstd),
                     borrowed(weight), centered, want_params, np.intp(k), nchunks,
                     borrowed(dx), borrowed(dw_part), borrowed(db_part))


@njit(**BACKWARD_JIT)
def _pairs_chunk(dy, x, mean, rstd, weight, centered, want_params, k, nchunks, dx, dw_part,
                 db_part):
    """Chunk k of backward_pairs."""
    R = x.shape[0]
    x, dy, dx, weight = borrowed(x), borrowed(dy), borrowed(dx), borrowed(weight)
    dwk, dbk = borrowed(dw_part)[k], borrowed(db_part)[k]
    dwk[:] = 0.0
    dbk[:] = 0.0
    start, stop = _chunk_rows(R, k, nchunks, 2)
    for ra in range(start, stop, 2):
        if ra + 1 < stop:
            _backward_pair(dy, x, mean, rstd, weight, centered, want_params, ra, dx, dwk, dbk)
        else:
            _backward_single(dy, x, mean, rstd, weight, centered, want_params, ra, dx, dwk,
                             dbk)


# ---------------------------------------------------------------------------------------------
# data normalization (numbanorm.scaling): mergeable moments of every row

@parallel_and_serial(JIT)
def data_moments(x2, omit, count, mean, m2, lo, hi, nans):
    """Per row of the (R, L) array x2: with count not None, count, mean and M2 of the values
    that enter the statistics (every value, or the non-NaN ones when omit is not None),
    blocks of BLOCK values by _moments.data_block in float64: the row's first block with
    values is centred on its own mean c, every later block on c too (read once), and the
    blocks' means are merged as offsets from c (chan_merge, see _moments.data_block); mean =
    c + offset.
    With lo not None, min, max (NaN ignored) and the NaN count of every row into lo, hi,
    nans (_moments.data_range)."""
    R, L = x2.shape
    x2 = borrowed(x2)
    for r in prange(R):
        xr = x2[r]
        if count is not None:
            n = 0.0
            c = 0.0
            m = 0.0
            q = 0.0
            for b0 in range(0, L, BLOCK):
                xb = xr[b0:min(b0 + BLOCK, L)]
                nb, centre, offset, qb = data_block(xb, omit, c, n > 0.0)
                if n == 0.0:
                    c = centre
                n, m, q = chan_merge(n, m, q, nb, offset, qb)
            count[r] = n
            mean[r] = c + m
            m2[r] = q
        if lo is not None:
            a, b, k = data_range(xr)
            lo[r] = a
            hi[r] = b
            nans[r] = k


@parallel_and_serial(JIT)
def data_norms(x2, p, out):
    """Per row of the (R, L) array x2: sum(|x|^p) in float64 (p = inf: max |x|), blocks of BLOCK
    values summed and then added; NaN propagates."""
    R, L = x2.shape
    x2 = borrowed(x2)
    for r in prange(R):
        xr = x2[r]
        acc = 0.0
        for b0 in range(0, L, BLOCK):
            acc = power_combine(p, acc, power_sum(xr[b0:min(b0 + BLOCK, L)], p, 0.0))
        out[r] = acc


@parallel_and_serial(JIT)
def count_nonfinite(x2, with_nan, out):
    """Per row of the (R, L) array x2: how many values are infinite (and NaN, with_nan)."""
    R, L = x2.shape
    x2 = borrowed(x2)
    for r in prange(R):
        xr = x2[r]
        k = 0
        for i in range(L):
            v = ld(xr[i])
            k += (abs(v) == np.inf) | (with_nan & (v != v))
        out[r] = k


# ---------------------------------------------------------------------------------------------
# the statistics-mixing ops (numbanorm.adaptive: switch_norm, batch_instance_norm): their
# statistics are data_moments of every (n, c) row; their backward is these two passes

@parallel_and_serial(JIT)
def slot_sums(dy2, x2, mh, lo, sdy, sdyx):
    """Per row r of the (R, L) arrays: sdy[r] = sum(dy) and sdyx[r] = sum(dy*(x - mean[r]))
    in float64, with mean = mh + lo (mh rounded to x's compute dtype, lo the rest, both in it:
    see _moments.split_mean), by grad_sums' blocks of BLOCK values summed in x's dtype and
    added in float64."""
    R, L = x2.shape
    x2 = borrowed(x2)
    dy2 = borrowed(dy2)
    for r in prange(R):
        m = mh[r]
        one = like(m, 1.0)
        a, b = grad_sums(x2[r], dy2[r], m, one, lo[r], one)
        sdy[r] = a
        sdyx[r] = b


@parallel_and_serial(ELEMENTWISE_JIT)
def slot_dx(dy2, x2, mh, p, q, o, dx2):
    """dx = dy*p[r] + (x - mh[r])*q[r] + o[r] per row r of the (R, L) arrays, in x's compute
    dtype (mh, p, q, o in it; the caller folds the part of the mean that mh drops into o)."""
    R, L = x2.shape
    x2, dy2, dx2 = borrowed(x2), borrowed(dy2), borrowed(dx2)
    for r in prange(R):
        m = mh[r]
        a = p[r]
        b = q[r]
        c = o[r]
        xr = x2[r]
        dr = dy2[r]
        out = dx2[r]
        for i in range(L):
            out[i] = st(out, ld(dr[i]) * a + (ld(xr[i]) - m) * b + c)


# ---------------------------------------------------------------------------------------------
# fused residual add + layer_norm / rms_norm (functional.add_layer_norm, add_rms_norm): rows of
# h = x + residual, one pass over memory

@njit(inline='always', **JIT)
def _add_row(xr, rr, s):
    """s = x + residual in the compute dtype (s's): the unrounded sum the statistics and the
    backward see, whatever dtype h is stored in (rr None: s = x)."""
    if rr is None:
        for j in range(s.size):
            s[j] = ld(xr[j])
    else:
        for j in range(s.size):
            s[j] = ld(xr[j]) + ld(rr[j])


@njit(**JIT)
def _add_forward_rows(x, res, rows, weight, bias, eps, centered, y, h, mean_out, rstd_out,
                      redo):
    """The rows `rows` (a range, or an array of row indices) of add_forward (the work item of
    both drivers: compiled once), or of add_forward_redo (redo True). Returns the number of
    rows marked for add_forward_redo (see _forward_row; h[r] and y[r] not written, so x and
    residual are intact where y and h are they)."""
    s = work(x, x.shape[1])
    marked = 0
    for r in rows:
        _add_row(x[r], res[r], s)
        mean, var_scaled, inv = moments(s, centered, redo)
        if inv == 0.0:
            rstd_out[r] = 0.0
            marked += 1
            continue
        hr = h[r]
        for j in range(s.size):
            hr[j] = st(hr, s[j])
        rstd = rstd_of(var_scaled, inv, eps)
        mean_out[r] = mean
        rstd_out[r] = rstd
        _affine(s, mean, like(s, rstd), weight, bias, y[r])
    return marked


@parallel_and_serial(JIT)
def add_forward(x, res, weight, bias, eps, centered, rows_per_item, y, h, mean_out, rstd_out,
                marked):
    """h = x + residual (stored in h's dtype) and y = norm(x + residual) of (R, L) rows, the
    statistics from the sum in the compute dtype before h's rounding (as flash-attn and
    vLLM): x and residual read once, y and h written once. Row r's arithmetic is `forward`'s
    on the sum; y and h may be x and residual themselves (a row is read before it is
    written). Items of rows_per_item rows (any: a row's result does not depend on them).
    marked[0] is set to 1 when a row is marked for add_forward_redo (see forward)."""
    R = x.shape[0]
    for i in prange((R + rows_per_item - 1) // rows_per_item):
        r0 = np.intp(i) * rows_per_item
        if _add_forward_rows(borrowed(x), borrowed(res), range(r0, min(R, r0 + rows_per_item)),
                             borrowed(weight), borrowed(bias), eps, centered, borrowed(y),
                             borrowed(h), borrowed(mean_out), borrowed(rstd_out), None):
            marked[0] = 1


@njit(**JIT)
def add_forward_redo(x, res, marked, weight, bias, eps, centered, y, h, mean_out, rstd_out):
    """add_forward of the rows `marked` by it, with the rare paths (see forward_redo)."""
    _add_forward_rows(x, res, marked, weight, bias, eps, centered, y, h, mean_out, rstd_out,
                      True)


@njit(**BACKWARD_JIT)
def _add_backward_chunk(dy, x, res, dh, mean, rstd, weight, centered, want_params, k, nchunks,
                        dx, dres, dw_part, db_part):
    R, L = x.shape
    s = work(x, L)
    zero = like(s, 0.0)
    dwk, dbk = dw_part[k], db_part[k]
    dwk[:] = 0.0
    dbk[:] = 0.0
    start, stop = _chunk_rows(R, k, nchunks, 1)
    for r in range(start, stop):
        _add_row(x[r], None if res is None else res[r], s)
        rs = like(zero, rstd[r])
        mh, lo = split_mean(rs, mean[r] if centered else 0.0)
        dyr = dy[r]
        if want_params:
            sum_g, sum_gx = _param_sums(s, dyr, mh, rs, lo, weight, dwk, dbk, 0)
        else:
            sum_g, sum_gx = grad_sums(s, dyr, mh, rs, lo, weight)
        mean_g = like(zero, sum_g / L if centered else 0.0)
        mean_gx = like(zero, sum_gx / L)
        dxr = dx[r]
        dhr = None if dh is None else dh[r]
        for j in range(L):
            xh = (s[j] - mh) * rs - lo
            v = rs * ((ld(dyr[j]) * weight[j] - mean_g) - xh * mean_gx)
            if dhr is not None:
                v = v + ld(dhr[j])
            dxr[j] = st(dxr, v)
            if dres is not None:
                dres[r, j] = st(dres, v)


@njit(parallel=True, **BACKWARD_JIT)
def add_backward(dy, x, res, dh, mean, rstd, weight, centered, want_params, dx, dres, dw_part,
                 db_part):
    """dx = d norm/d h + dh of add_forward's rows (the gradient of the unrounded sum: x is h
    itself where h holds the sum exactly, res None; else the forward's x and residual, added
    again in the compute dtype), written to dx (x's dtype) and, where the residual's dtype
    differs, to dres (its dtype; None: dresidual is dx). dweight/dbias partials per chunk of
    at most BLOCK rows in the compute dtype (dw_part, db_part (K, L)), as `backward`'s
    x-dtype partials."""
    nchunks = dw_part.shape[0]
    for k in prange(nchunks):
        _add_backward_chunk(borrowed(dy), borrowed(x), res, dh, borrowed(mean), borrowed(rstd),
                            borrowed(weight), centered, want_params, np.intp(k), nchunks,
                            borrowed(dx), dres, borrowed(dw_part), borrowed(db_part))


@njit(**BACKWARD_JIT)
def add_backward_serial(dy, x, res, dh, mean, rstd, weight, centered, want_params, dx, dres,
                        dw_part, db_part):
    """`add_backward` on one thread."""
    nchunks = dw_part.shape[0]
    for k in range(nchunks):
        _add_backward_chunk(dy, x, res, dh, mean, rstd, weight, centered, want_params, k,
                            nchunks, dx, dres, dw_part, db_part)
