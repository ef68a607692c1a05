"""Channels-last geometry: instance_norm and group_norm on (N, *spatial, C) memory.

x is viewed as (N, S, C): image n is an (S, C) matrix whose rows are the C channels of one
spatial position, contiguous (NumPy's (N, H, W, C) images, PyTorch's channels_last strides).
Statistics are per (n, group) with G groups of Cg = C/G adjacent channels (instance_norm:
G = C). batch_norm on this memory needs no kernel of its own: its statistics run over all N*S
rows, which is the channels geometry's (N*S, C) column layout (numbanorm.cpu.channels).

One work item per image, which the image's statistics and its output pass share, so that the
second read of the image comes from cache (an (S, C) image of up to a few MiB stays in L2;
two passes over memory, statistics then output, took 1.6x the time of NCHW instance_norm on
(32, 56, 56, 64) float32). Within an item:

    statistics   the rows streamed block by block, vectorised across the C channels, into
                 per-channel (mean, M2) with the column kernels' blocked Welford/Chan
                 (channels._column_chunk: blocks in x's dtype, shifted by the running mean,
                 redone in float64 where float32 is not exact enough), strips of
                 COLUMN_STRIP_BYTES columns; then the Cg channels of each group Chan-merged
                 in order (channels._merge_columns)
    forward      y = (x - mean_g)*rstd_g*w[c] + b[c], in x's dtype with the mean split as
                 everywhere (channels.affine_terms)
    backward     per channel sum(dy) and sum(dy*xhat), xhat = (x - mean_g)*rstd_g (blocks in
                 x's dtype, added in float64), then per group md = sum_c w[c]*sum(dy)/M and
                 mx = sum_c w[c]*sum(dy*xhat)/M (M = Cg*S), and
                 dx = rstd*((dy*w[c] - md) - xhat*mx)

Few large images (N below CHANNELS_LAST_SPLIT_ITEMS, numbanorm.cpu._host chooses by the
shape) would leave threads idle: each image is then cut into K chunks of rows, and the work
items are (image, chunk) in three kernels (split_*): the chunks' per-column moments, their
merge per image in order with the group terms (or the backward's sums and group terms), and
the output pass. The image is read twice from memory instead of once from cache.

The item's partition (the whole image, or its K chunks, in blocks fixed by the shape) and
every merge order are fixed, so results do not depend on the thread count. The per-(n, c)
sums of the backward come back to the host for dweight = sum_n sum(dy*xhat) and
dbias = sum_n sum(dy).
"""
import types

import numpy as np
from numba import njit, prange

from .._config import ELEMENTWISE_JIT, JIT
from ._half import ld, st
from ._moments import (borrowed, chan_merge, like, parallel_and_serial, rstd_of, split_mean,
                       work)
from .channels import _column_chunk, _merge_columns, affine_terms

SERIAL = types.SimpleNamespace()  # the serial twins (see _moments.parallel_and_serial)


@njit(**JIT)
def _image_moments(x2, rows_per_block, shift_min_rows, strip, col_mean, col_m2):
    """Per-column (mean, M2) of the whole (S, C) image, strip by strip of `strip` columns, by
    the column kernels' chunk reduction over one chunk (channels._column_chunk: blocks in x's
    dtype shifted by the running mean, redone in float64 where float32 is not exact enough).
    A call, not inlined: its compiled code is batch_norm's own (the channels-last forward
    compiled in 6.1 s cold with it inlined)."""
    C = x2.shape[1]
    col_mean[:] = 0.0
    col_m2[:] = 0.0
    for m0 in range(0, C, strip):
        m1 = min(C, m0 + strip)
        W = m1 - m0
        _column_chunk(x2, m0, None, 0, 1, rows_per_block, shift_min_rows, col_mean[m0:m1],
                      col_m2[m0:m1], np.empty(W), np.empty(W), np.empty(W), work(x2, W),
                      work(x2, W), work(x2, W), col_mean[m0:m1], False)


@njit(inline='always', **JIT)
def _terms(S, G, weight, bias, eps, col_mean, col_m2, mean_g, rstd_g, mh, a, b):
    """The image's per-group mean and rstd (into mean_g, rstd_g) from its per-column (mean, M2)
    of S values each (channels._merge_columns, in order), and the per-channel terms of
    y = (x - mh)*a + b in x's dtype by channels.affine_terms on the group values of each
    channel."""
    C = col_mean.size
    Cg = C // G
    m2_g = np.empty(G)
    _merge_columns(col_mean, col_m2, float(S), G, mean_g, m2_g)
    for g in range(G):
        rstd_g[g] = rstd_of(m2_g[g] / float(S * Cg), 1.0, eps)
    mean_c = np.empty(C)
    rstd_c = np.empty(C)
    for c in range(C):
        mean_c[c] = mean_g[c // Cg]
        rstd_c[c] = rstd_g[c // Cg]
    affine_terms(mean_c, rstd_c, weight, bias, mh, a, b)


@njit(**JIT)
def _forward_image(x3, n, G, weight, bias, eps, rows_per_block, shift_min_rows, strip, y3,
                   mean, rstd):
    """Image n: its statistics, block by block, then its output pass over it again, from cache
    (the work item of `forward` and its serial twin: compiled once, so both give the same
    bits)."""
    S, C = x3.shape[1], x3.shape[2]
    x2, y2 = x3[n], y3[n]
    col_mean = np.empty(C)
    col_m2 = np.empty(C)
    _image_moments(x2, rows_per_block, shift_min_rows, strip, col_mean, col_m2)
    mh, a, b = work(x3, C), work(x3, C), work(x3, C)
    _terms(S, G, weight, bias, eps, col_mean, col_m2, mean[n], rstd[n], mh, a, b)
    _affine_rows(x2, 0, S, mh, a, b, y2)


@njit(inline='always', **JIT)
def _affine_rows(x2, r0, r1, mh, a, b, y2):
    """y = (x - mh)*a + b per column, rows r0:r1 of the (S, C) image."""
    C = x2.shape[1]
    for s in range(r0, r1):
        xi = x2[s]
        yi = y2[s]
        for c in range(C):
            yi[c] = st(yi, (ld(xi[c]) - mh[c]) * a[c] + b[c])


@parallel_and_serial(JIT)
def forward(x3, G, weight, bias, eps, rows_per_block, shift_min_rows, strip, y3, mean, rstd):
    """y, and the per-(image, group) mean and rstd ((N, G) float64), of the (N, S, C) x3;
    weight and bias per channel (x's compute dtype); one work item per image. (Items of
    several images, the next image's statistics reduced between the blocks of this one's
    output pass, took 1.15x the time: (32, 56, 56, 64) float32 1.56-1.60 ms against 1.36-1.39,
    (8, 28, 28, 256) 0.33 against 0.30.)"""
    for n in prange(x3.shape[0]):
        _forward_image(borrowed(x3), np.intp(n), G, borrowed(weight), borrowed(bias), eps,
                       rows_per_block, shift_min_rows, strip, borrowed(y3), borrowed(mean),
                       borrowed(rstd))


@njit(inline='always', **JIT)
def _image_sums(dy2, x2, mh, r, lo, rows_per_block, sdy, sdyx):
    """Per-column sum(dy) and sum(dy*xhat), xhat = (x - mh)*r - lo, of the (S, C) image into
    the float64 sdy, sdyx: blocks of rows_per_block rows summed in x's dtype, four rows per
    load and store of the block sums (50 -> 36 us a float32 (3136, 64) image in cache), added
    in float64 (xhat, not x - mean: its sums stay in range for float64 |x| ~ 1e300)."""
    S, C = x2.shape
    sd = work(x2, C)
    sx = work(x2, C)
    sdy[:] = 0.0
    sdyx[:] = 0.0
    for b0 in range(0, S, rows_per_block):
        b1 = min(b0 + rows_per_block, S)
        b4 = b0 + (b1 - b0) // 4 * 4
        sd[:] = 0.0
        sx[:] = 0.0
        for i in range(b0, b4, 4):
            d0, d1, d2, d3 = dy2[i], dy2[i + 1], dy2[i + 2], dy2[i + 3]
            x0, x1, x2_, x3 = x2[i], x2[i + 1], x2[i + 2], x2[i + 3]
            for c in range(C):
                m = mh[c]
                rc = r[c]
                lc = lo[c]
                e0, e1, e2, e3 = ld(d0[c]), ld(d1[c]), ld(d2[c]), ld(d3[c])
                sd[c] += (e0 + e1) + (e2 + e3)
                sx[c] += ((e0 * ((ld(x0[c]) - m) * rc - lc) + e1 * ((ld(x1[c]) - m) * rc - lc))
                          + (e2 * ((ld(x2_[c]) - m) * rc - lc)
                             + e3 * ((ld(x3[c]) - m) * rc - lc)))
        for i in range(b4, b1):
            di = dy2[i]
            xi = x2[i]
            for c in range(C):
                d = ld(di[c])
                sd[c] += d
                sx[c] += d * ((ld(xi[c]) - mh[c]) * r[c] - lo[c])
        for c in range(C):
            sdy[c] += float(sd[c])
            sdyx[c] += float(sx[c])


@njit(**ELEMENTWISE_JIT)
def _image_dx(dy2, x2, mh, r, lo, u, md, mx, dx2):
    """dx = r*((dy*u - md) - xhat*mx), xhat = (x - mh)*r - lo, per column, in x's dtype. A
    function of its own: its flags keep the written association (see _config.ELEMENTWISE_JIT);
    r multiplies the bracket, so no rstd^2 constant is formed (it underflows for |x| ~ 1e300)."""
    S, C = x2.shape
    for s in range(S):
        xi = x2[s]
        di = dy2[s]
        out = dx2[s]
        for c in range(C):
            xh = (ld(xi[c]) - mh[c]) * r[c] - lo[c]
            out[c] = st(out, r[c] * ((ld(di[c]) * u[c] - md[c]) - xh * mx[c]))


@njit(**JIT)
def _backward_image(dy3, x3, n, G, mean, rstd, weight, rows_per_block, dx3, sdy3, sdyx3):
    """Image n's dx and per-channel sums (the work item of `backward` and its twin)."""
    dy2, x2, dx2, mean_g, rstd_g = dy3[n], x3[n], dx3[n], mean[n], rstd[n]
    sdy, sdyx = sdy3[n], sdyx3[n]
    S, C = x2.shape
    mh, r, lo = _xhat_terms(x2, mean_g, rstd_g, G)
    _image_sums(dy2, x2, mh, r, lo, rows_per_block, sdy, sdyx)
    u, md, mx = work(x2, C), work(x2, C), work(x2, C)
    _group_terms(sdy, sdyx, weight, G, S, u, md, mx)
    _image_dx(dy2, x2, mh, r, lo, u, md, mx, dx2)


@njit(inline='always', **JIT)
def _xhat_terms(x, mean_g, rstd_g, G):
    """(mh, r, lo) per channel of the image x ((S, C) or (N, S, C)), xhat = (x - mh)*r - lo:
    the group's rstd in x's dtype and its mean split (split_mean)."""
    C = x.shape[-1]
    Cg = C // G
    mh, r, lo = work(x, C), work(x, C), work(x, C)
    for c in range(C):
        g = c // Cg
        r[c] = like(r, rstd_g[g])
        mh[c], lo[c] = split_mean(r[c], mean_g[g])
    return mh, r, lo


@njit(inline='always', **JIT)
def _group_terms(sdy, sdyx, weight, G, S, u, md, mx):
    """Per channel of an image of S rows: u = w[c], and its group's md = sum_c w*sum(dy)/M and
    mx = sum_c w*sum(dy*xhat)/M (M = Cg*S), in x's dtype."""
    C = u.size
    Cg = C // G
    M = float(S * Cg)
    for g in range(G):
        sg = 0.0
        sgx = 0.0
        for c in range(g * Cg, (g + 1) * Cg):
            w = float(weight[c])
            sg += w * sdy[c]
            sgx += w * sdyx[c]
        for c in range(g * Cg, (g + 1) * Cg):
            u[c] = like(u, weight[c])
            md[c] = like(md, sg / M)
            mx[c] = like(mx, sgx / M)


@parallel_and_serial(JIT)
def backward(dy3, x3, G, mean, rstd, weight, rows_per_block, dx3, sdy, sdyx):
    """dx of the (N, S, C) arrays, and the per-(image, channel) float64 sum(dy) and
    sum(dy*xhat) into sdy, sdyx ((N, C)); one work item per image."""
    for n in prange(x3.shape[0]):
        _backward_image(borrowed(dy3), borrowed(x3), np.intp(n), G, borrowed(mean),
                        borrowed(rstd), borrowed(weight), rows_per_block, borrowed(dx3),
                        borrowed(sdy), borrowed(sdyx))


# ---------------------------------------------------------------------------------------------
# few large images: (image, chunk of rows) work items

@njit(**JIT)
def chunk_rows(S, K, k):
    """Rows [r0, r1) of chunk k of an image of S rows cut into K chunks."""
    per = (S + K - 1) // K
    return min(S, k * per), min(S, (k + 1) * per)


@njit(inline='always', **JIT)
def _item_rows(i, K, S):
    """(image, chunk, first row, end row) of work item i of the split kernels."""
    n, k = i // K, i % K
    r0, r1 = chunk_rows(S, K, k)
    return n, k, r0, r1


@njit(**JIT)
def _moments_item(x3, i, K, rows_per_block, shift_min_rows, strip, pmean, pm2):
    n, k, r0, r1 = _item_rows(i, K, x3.shape[1])
    _image_moments(x3[n, r0:r1], rows_per_block, shift_min_rows, strip, pmean[n, k], pm2[n, k])


@parallel_and_serial(JIT)
def split_moments(x3, K, rows_per_block, shift_min_rows, strip, pmean, pm2):
    """Per (image, chunk, column) (mean, M2) of the chunks' rows into pmean, pm2 ((N, K, C)
    float64), as the whole image's are taken (_image_moments)."""
    for i in prange(x3.shape[0] * K):
        _moments_item(borrowed(x3), np.intp(i), K, rows_per_block, shift_min_rows, strip,
                      borrowed(pmean), borrowed(pm2))


@njit(**JIT)
def split_terms(pmean, pm2, S, G, weight, bias, eps, mean, rstd, mh, a, b):
    """Per image: its K chunks' per-column (mean, M2) Chan-merged in chunk order, then the
    group statistics (mean, rstd: (N, G)) and the output terms mh, a, b ((N, C), x's compute
    dtype) as an unsplit image's (_terms)."""
    N, K, C = pmean.shape
    col_mean = np.empty(C)
    col_m2 = np.empty(C)
    for n in range(N):
        count = 0.0
        for k in range(K):
            r0, r1 = chunk_rows(S, K, k)
            nb = float(r1 - r0)
            for c in range(C):
                if k == 0:
                    col_mean[c] = pmean[n, k, c]
                    col_m2[c] = pm2[n, k, c]
                elif nb > 0.0:
                    _, col_mean[c], col_m2[c] = chan_merge(count, col_mean[c], col_m2[c], nb,
                                                           pmean[n, k, c], pm2[n, k, c])
            count += nb
        _terms(S, G, weight, bias, eps, col_mean, col_m2, mean[n], rstd[n], mh[n], a[n], b[n])


@njit(**JIT)
def _affine_item(x3, i, K, mh, a, b, y3):
    n, _, r0, r1 = _item_rows(i, K, x3.shape[1])
    _affine_rows(x3[n], r0, r1, mh[n], a[n], b[n], y3[n])


@parallel_and_serial(JIT)
def split_affine(x3, K, mh, a, b, y3):
    """y = (x - mh)*a + b of every (image, chunk), mh, a, b per (image, channel)."""
    for i in prange(x3.shape[0] * K):
        _affine_item(borrowed(x3), np.intp(i), K, borrowed(mh), borrowed(a), borrowed(b),
                     borrowed(y3))


@njit(**JIT)
def _sums_item(dy3, x3, i, K, G, mean, rstd, rows_per_block, psdy, psdyx):
    n, k, r0, r1 = _item_rows(i, K, x3.shape[1])
    mh, r, lo = _xhat_terms(x3, mean[n], rstd[n], G)
    _image_sums(dy3[n, r0:r1], x3[n, r0:r1], mh, r, lo, rows_per_block, psdy[n, k],
                psdyx[n, k])


@parallel_and_serial(JIT)
def split_sums(dy3, x3, K, G, mean, rstd, rows_per_block, psdy, psdyx):
    """Per (image, chunk, column) float64 sum(dy) and sum(dy*xhat) into psdy, psdyx
    ((N, K, C)), as an unsplit image's (_image_sums)."""
    for i in prange(x3.shape[0] * K):
        _sums_item(borrowed(dy3), borrowed(x3), np.intp(i), K, G, borrowed(mean),
                   borrowed(rstd), rows_per_block, borrowed(psdy), borrowed(psdyx))


@njit(**JIT)
def split_grad_terms(psdy, psdyx, S, G, weight, sdy, sdyx, u, md, mx):
    """Per image: the chunks' sums added in chunk order (sdy, sdyx: (N, C) float64) and the
    terms u, md, mx of its dx ((N, C), x's compute dtype), as an unsplit image's."""
    N, K, C = psdy.shape
    for n in range(N):
        for c in range(C):
            sdy[n, c] = 0.0
            sdyx[n, c] = 0.0
        for k in range(K):
            for c in range(C):
                sdy[n, c] += psdy[n, k, c]
                sdyx[n, c] += psdyx[n, k, c]
        _group_terms(sdy[n], sdyx[n], weight, G, S, u[n], md[n], mx[n])


@njit(**JIT)
def _dx_item(dy3, x3, i, K, G, mean, rstd, u, md, mx, dx3):
    n, _, r0, r1 = _item_rows(i, K, x3.shape[1])
    mh, r, lo = _xhat_terms(x3, mean[n], rstd[n], G)
    _image_dx(dy3[n, r0:r1], x3[n, r0:r1], mh, r, lo, u[n], md[n], mx[n], dx3[n, r0:r1])


@parallel_and_serial(JIT)
def split_dx(dy3, x3, K, G, mean, rstd, u, md, mx, dx3):
    """dx of every (image, chunk), with the per-image terms of split_grad_terms."""
    for i in prange(x3.shape[0] * K):
        _dx_item(borrowed(dy3), borrowed(x3), np.intp(i), K, G, borrowed(mean),
                 borrowed(rstd), borrowed(u), borrowed(md), borrowed(mx), borrowed(dx3))
