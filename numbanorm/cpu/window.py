"""Window geometry: local_response_norm, a sliding window along the channels.

x is viewed as (N, C, S), S = prod(x.shape[2:]) (PyTorch asks for 3-D input at least).
For each (n, s), along c, with PyTorch's window [c - size//2, c + (size - 1)//2] and zeros
outside [0, C):

    d[c] = k + alpha*(sum of x^2 over the window)/size        (divisor always `size`)
    y[c] = x[c] / d[c]^beta

Backward, t[i] = dy[i]*x[i]*d[i]^(-beta - 1) and the mirrored window
[j - (size - 1)//2, j + size//2] (the i whose window holds j):

    dx[j] = dy[j]*d[j]^(-beta) - (2*alpha*beta/size)*x[j]*(sum of t over the mirrored window)

Sliding sums without cancellation (van Herk / Gil-Werman): the zero-padded sequence is cut
into blocks of `size` values, prefix sums within each block and suffix sums within each block
are taken, and any window of `size` values is one block's suffix plus the next block's prefix
(or one whole block). Three additions per value whatever the size, and never a subtraction: a
running sum that adds the entering value and subtracts the leaving one loses the small terms
next to a large one that has left (scripts/lrn_accuracy.py measures both). The sums have the
error of a plain sum of `size` terms.

Each work item is one n and a tile of T spatial positions (T from the host: the tile's
scratch stays in L2); the loops run along the tile, contiguous in memory, so they vectorise.
Results do not depend on T or the thread count: every value's arithmetic is its own column's.
x^2, the sums and y are computed in x's compute dtype (float32 for float32 and 16-bit data,
as PyTorch does). d^(-beta) takes square roots for beta in (0.5, 0.75, 1, 1.5) (vectorised;
no SVML here, so math.pow runs scalar) and exp(-beta*log(d)) otherwise.
"""
import math
import types

import numpy as np
from numba import njit, prange

from .._config import ELEMENTWISE_JIT
from ._half import ld, st
from ._moments import borrowed, like, parallel_and_serial, work

SERIAL = types.SimpleNamespace()  # the serial twins (see _moments.parallel_and_serial)


@njit(inline='always', **ELEMENTWISE_JIT)
def _sliding(v, pre, w, phase, C, out):
    """out[c, :] = sum of v[c:c + w, :] for c < C, by block prefix and suffix sums (v is
    overwritten by the suffix sums); the blocks start where (p + phase) % w == 0, so that a
    part of the channels (a Dask block with its neighbours) sums its windows as the whole
    does."""
    Cp, T = v.shape
    for p in range(Cp):
        vp = v[p]
        pp = pre[p]
        if (p + phase) % w == 0 or p == 0:
            for t in range(T):
                pp[t] = vp[t]
        else:
            pq = pre[p - 1]
            for t in range(T):
                pp[t] = pq[t] + vp[t]
    for p in range(Cp - 2, -1, -1):
        if (p + 1 + phase) % w != 0:
            vp = v[p]
            vq = v[p + 1]
            for t in range(T):
                vp[t] += vq[t]
    for c in range(C):
        pe = pre[c + w - 1]
        oc = out[c]
        if (c + phase) % w == 0:
            for t in range(T):
                oc[t] = pe[t]
        else:
            vc = v[c]
            for t in range(T):
                oc[t] = vc[t] + pe[t]


@njit(inline='always', **ELEMENTWISE_JIT)
def _neg_power(d, beta, mode, out):
    """out = d^(-beta) elementwise over the 1-d arrays (mode: 1 beta = 0.5, 2 beta = 0.75,
    3 beta = 1, 4 beta = 1.5, 0 any other)."""
    one = like(d[0], 1.0)
    if mode == 1:
        for t in range(d.size):
            out[t] = one / math.sqrt(d[t])
    elif mode == 2:
        for t in range(d.size):
            r = one / math.sqrt(d[t])
            out[t] = r * math.sqrt(r)
    elif mode == 3:
        for t in range(d.size):
            out[t] = one / d[t]
    elif mode == 4:
        for t in range(d.size):
            out[t] = one / (d[t] * math.sqrt(d[t]))
    else:
        nb = like(d[0], -beta)
        for t in range(d.size):
            out[t] = math.exp(nb * math.log(d[t]))


@njit(inline='always', **ELEMENTWISE_JIT)
def _squares(x3, n, s0, T, lp, v):
    """v[p, :T] = x[n, p - lp, s0:s0 + T]^2 (0 outside the channels)."""
    C = x3.shape[1]
    zero = like(v[0, 0], 0.0)
    for p in range(v.shape[0]):
        c = p - lp
        vp = v[p]
        if c < 0 or c >= C:
            for t in range(T):
                vp[t] = zero
        else:
            xr = x3[n, c]
            for t in range(T):
                a = ld(xr[s0 + t])
                vp[t] = a * a
    return v


@njit(inline='always', **ELEMENTWISE_JIT)
def _divisor(total, size, alpha, k):
    """d = total/size*alpha + k in place (PyTorch's order: avg_pool, then mul, then add)."""
    sz = like(total[0], size)
    a = like(total[0], alpha)
    kk = like(total[0], k)
    for t in range(total.size):
        total[t] = total[t] / sz * a + kk


@njit(inline='always', **ELEMENTWISE_JIT)
def _window_squares(x3, size, T, phase, item):
    """(n, s0, Tn, v, pre, sums) of work item `item` (sample n, positions [s0, s0 + Tn)):
    sums[c] holds the window sums of x^2 of channel c (v and pre: the scratch the sums took,
    free for a second window)."""
    N, C, S = x3.shape
    tiles = (S + T - 1) // T
    Cp = C + size - 1
    n = item // tiles
    s0 = (item % tiles) * T
    Tn = min(T, S - s0)
    v = work(x3, Cp * Tn).reshape(Cp, Tn)
    pre = work(x3, Cp * Tn).reshape(Cp, Tn)
    sums = work(x3, C * Tn).reshape(C, Tn)
    _sliding(_squares(x3, n, s0, Tn, size // 2, v), pre, size, phase, C, sums)
    return n, s0, Tn, v, pre, sums


@njit(**ELEMENTWISE_JIT)
def _forward_item(x3, size, alpha, beta, k, mode, T, phase, item, y3):
    """One work item of forward: sample n, positions [s0, s0 + T)."""
    C = x3.shape[1]
    n, s0, Tn, v, pre, tot = _window_squares(x3, size, T, phase, item)
    for c in range(C):
        dc = tot[c]
        _divisor(dc, size, alpha, k)
        _neg_power(dc, beta, mode, dc)
        xr = x3[n, c]
        yr = y3[n, c]
        for t in range(Tn):
            yr[s0 + t] = st(yr, ld(xr[s0 + t]) * dc[t])


@njit(**ELEMENTWISE_JIT)
def _backward_item(dy3, x3, size, alpha, beta, k, mode, T, item, dx3):
    """One work item of backward (as _forward_item's)."""
    C = x3.shape[1]
    Cp = C + size - 1
    n, s0, Tn, v, pre, scale = _window_squares(x3, size, T, 0, item)
    # scale = d^(-beta); t = dy*x*scale/d, into the padded rows of v for the mirrored window
    lp = (size - 1) // 2
    zero = like(v[0, 0], 0.0)
    for p in range(Cp):
        c = p - lp
        vp = v[p]
        if c < 0 or c >= C:
            for t in range(Tn):
                vp[t] = zero
        else:
            dc = scale[c]
            _divisor(dc, size, alpha, k)
            xr = x3[n, c]
            dr = dy3[n, c]
            for t in range(Tn):
                vp[t] = dc[t]
            _neg_power(dc, beta, mode, dc)
            for t in range(Tn):
                vp[t] = ld(dr[s0 + t]) * ld(xr[s0 + t]) * dc[t] / vp[t]
    acc = work(x3, C * Tn).reshape(C, Tn)
    _sliding(v, pre, size, 0, C, acc)
    coef = like(v[0, 0], 2.0 * alpha * beta / size)
    for c in range(C):
        xr = x3[n, c]
        dr = dy3[n, c]
        out = dx3[n, c]
        sc = scale[c]
        ac = acc[c]
        for t in range(Tn):
            out[s0 + t] = st(out, ld(dr[s0 + t]) * sc[t] - coef * ld(xr[s0 + t]) * ac[t])


# The drivers: the prange body is one call of a compiled item function (arrays passed
# borrowed, the index as np.intp), which the serial twin calls too, so Numba types and
# compiles the body once (see the README's rule for adding an op).

@parallel_and_serial(ELEMENTWISE_JIT)
def forward(x3, size, alpha, beta, k, mode, T, phase, y3):
    """y = x*d^(-beta) (see the module docstring), items of one n and T positions; phase:
    where the window sums' blocks start (_sliding; 0 for the whole of the channels)."""
    N, C, S = x3.shape
    x3, y3 = borrowed(x3), borrowed(y3)
    for item in prange(N * ((S + T - 1) // T)):
        _forward_item(x3, size, alpha, beta, k, mode, T, phase, np.intp(item), y3)


@parallel_and_serial(ELEMENTWISE_JIT)
def backward(dy3, x3, size, alpha, beta, k, mode, T, dx3):
    """dx of forward (see the module docstring), items as forward's."""
    N, C, S = x3.shape
    dy3, x3, dx3 = borrowed(dy3), borrowed(x3), borrowed(dx3)
    for item in prange(N * ((S + T - 1) // T)):
        _backward_item(dy3, x3, size, alpha, beta, k, mode, T, np.intp(item), dx3)
