"""switch_norm's arithmetic on the per-(n, c) statistics (numbanorm.adaptive), compiled: the
same code for every backend (the statistics come to the host as float64 NumPy arrays from
the CPU and the GPU alike), in float64, in a fixed order.

The statistics a mix may take, by code: 0 IN (each (n, c) over its S values), 1 LN (each n
over its C*S values), 2 BN (each c over its N*S values). kinds: their codes in the order of
the mixing weights. stat_mean and stat_var are (K, N, C): every statistic broadcast to (n, c).

Exact mode: LN's and BN's (count, mean, M2) are the IN triples merged by Chan's formula
(numbanorm._chan.chan_merge, in order over c or n), variances biased (M2/M). Reference mode
(the reference code's numbers): var_in = M2/(S - 1), and LN, BN as mean(var_in + mean_in^2)
- mean^2 over the group; for (N, C) input (no IN) the plain unbiased variance M2/(M - 1).

Backward: see numbanorm.adaptive's docstring; d var_k/dx = a_k*(x - mean) + c_k per (n, c)
(_dvar).
"""
import math

import numpy as np
from numba import njit

from ._chan import chan_merge
from ._config import HOST_JIT

_merge = njit(inline="always", **HOST_JIT)(chan_merge)

IN, LN, BN = 0, 1, 2


@njit(**HOST_JIT)
def _in_position(kinds):
    """The position of IN among kinds, -1 without it ((N, C) input: S == 1)."""
    for k in range(kinds.size):
        if kinds[k] == IN:
            return k
    return -1


@njit(**HOST_JIT)
def _group(mean_in, m2_in, S, reference, one_d, axis, j):
    """(mean, var, running var) of group j of LN (axis 1: sample j) or BN (axis 0: channel
    j) from the IN triples; running var: the unbiased variance (reference: its var)."""
    N, C = mean_in.shape
    K = C if axis == 1 else N
    if reference and not one_d:
        sm = 0.0
        st = 0.0
        for i in range(K):
            m = mean_in[j, i] if axis == 1 else mean_in[i, j]
            q = m2_in[j, i] if axis == 1 else m2_in[i, j]
            sm += m
            st += q / (S - 1) + m * m
        mean = sm / K
        var = st / K - mean * mean
        return mean, var, var
    cnt = 0.0
    mean = 0.0
    q = 0.0
    for i in range(K):
        m = mean_in[j, i] if axis == 1 else mean_in[i, j]
        qi = m2_in[j, i] if axis == 1 else m2_in[i, j]
        cnt, mean, q = _merge(cnt, mean, q, float(S), m, qi)
    var = q / (cnt - 1.0) if reference else q / cnt
    return mean, var, q / (cnt - 1.0)


@njit(**HOST_JIT)
def softmax(logits, out):
    """out = softmax(logits) in float64 (the largest logit subtracted first)."""
    top = logits[0]
    for k in range(1, logits.size):  # (a loop: logits.max() took 0.6 s more to compile)
        if logits[k] > top or logits[k] != logits[k]:
            top = logits[k]
    total = 0.0
    for k in range(logits.size):
        out[k] = math.exp(float(logits[k]) - top)
        total += out[k]
    for k in range(logits.size):
        out[k] /= total


@njit(**HOST_JIT)
def switch_forward(mean_in, m2_in, S, kinds, training, reference, rm, rv, mean_logits,
                   var_logits, eps, mw, vw, stat_mean, stat_var, mean, rstd, batch_mean,
                   batch_var):
    """The mixing weights mw, vw (the logits' softmax), the mixed per-(n, c) mean and rstd =
    1/sqrt(var + eps) (into mean, rstd), every mixed statistic into stat_mean/stat_var, and
    BN's batch mean and running variance (training) into batch_mean/batch_var. rm, rv: the
    running buffers (read in eval mode)."""
    N, C = mean_in.shape
    K = kinds.size
    softmax(mean_logits, mw)
    softmax(var_logits, vw)
    one_d = _in_position(kinds) < 0
    ln_mean = np.empty(N)
    ln_var = np.empty(N)
    bn_mean = np.empty(C)
    bn_var = np.empty(C)
    for k in range(K):
        if kinds[k] == LN:
            for n in range(N):
                ln_mean[n], ln_var[n], _ = _group(mean_in, m2_in, S, reference, one_d, 1, n)
        elif kinds[k] == BN:
            for c in range(C):
                if training:
                    bn_mean[c], bn_var[c], batch_var[c] = _group(mean_in, m2_in, S, reference,
                                                                 one_d, 0, c)
                    batch_mean[c] = bn_mean[c]
                else:
                    bn_mean[c] = rm[c]
                    bn_var[c] = rv[c]
    for n in range(N):
        for c in range(C):
            m = 0.0
            v = 0.0
            for k in range(K):
                kind = kinds[k]
                if kind == IN:
                    km = mean_in[n, c]
                    kv = m2_in[n, c] / (S - 1) if reference else m2_in[n, c] / S
                elif kind == LN:
                    km = ln_mean[n]
                    kv = ln_var[n]
                else:
                    km = bn_mean[c]
                    kv = bn_var[c]
                stat_mean[k, n, c] = km
                stat_var[k, n, c] = kv
                m += mw[k] * km
                v += vw[k] * kv
            mean[n, c] = m
            rstd[n, c] = 1.0 / math.sqrt(v + eps)


@njit(**HOST_JIT)
def _dvar(kind, mean, stat_mean, k_in, k, n, c, reference, one_d, M, N, C, S):
    """(a, c) of d var_k/dx = a*(x - mean) + c for x in (n, c), mean the mixed mean."""
    mk = stat_mean[k, n, c]
    if not reference or one_d:
        a = 2.0 / (M - 1.0 if reference else M)
        return a, a * (mean - mk)
    a_in = 2.0 / (S - 1.0)
    if kind == IN:
        return a_in, a_in * (mean - mk)
    G = C if kind == LN else N
    m_in = stat_mean[k_in, n, c]
    a = a_in / G
    return a, a * (mean - m_in) + 2.0 * (m_in - mk) / (G * S)


@njit(**HOST_JIT)
def switch_backward(sdy, sdyx, mean, rstd, stat_mean, stat_var, kinds, training, reference, mw,
                    vw, w, S, P, Q, O, dmw, dvw, dweight, dbias):
    """dx = dy*P + (x - mean)*Q + O per (n, c) (into P, Q, O), the mixing weights' gradients
    through the softmax (dmw, dvw) and dweight = sum_n rstd*sdyx, dbias = sum_n sdy, from the
    per-(n, c) sums sdy = sum(dy), sdyx = sum(dy*(x - mean))."""
    N, C = sdy.shape
    K = kinds.size
    k_in = _in_position(kinds)
    one_d = k_in < 0
    gm = np.empty((N, C))
    gv = np.empty((N, C))
    ln_m = np.zeros(N)
    ln_v = np.zeros(N)
    bn_m = np.zeros(C)
    bn_v = np.zeros(C)
    dm = np.zeros(K)
    dv = np.zeros(K)
    dweight[:] = 0.0
    dbias[:] = 0.0
    for n in range(N):
        for c in range(C):
            r = rstd[n, c]
            a = -r * w[c] * sdy[n, c]                 # dL/dmean
            b = -0.5 * r * r * r * w[c] * sdyx[n, c]  # dL/dvar
            gm[n, c] = a
            gv[n, c] = b
            ln_m[n] += a
            ln_v[n] += b
            bn_m[c] += a
            bn_v[c] += b
            for k in range(K):
                dm[k] += a * stat_mean[k, n, c]
                dv[k] += b * stat_var[k, n, c]
            dweight[c] += r * sdyx[n, c]
            dbias[c] += sdy[n, c]
    sizes = np.empty(K)
    for k in range(K):
        sizes[k] = S if kinds[k] == IN else (C * S if kinds[k] == LN else N * S)
    for n in range(N):
        for c in range(C):
            q = 0.0
            o = 0.0
            for k in range(K):
                kind = kinds[k]
                if kind == BN and not training:
                    continue  # running statistics: no path to x
                if kind == IN:
                    hm, hv = gm[n, c], gv[n, c]
                elif kind == LN:
                    hm, hv = ln_m[n], ln_v[n]
                else:
                    hm, hv = bn_m[c], bn_v[c]
                a, cc = _dvar(kind, mean[n, c], stat_mean, k_in, k, n, c, reference, one_d,
                              sizes[k], N, C, S)
                q += vw[k] * hv * a
                o += mw[k] * hm / sizes[k] + vw[k] * hv * cc
            P[n, c] = rstd[n, c] * w[c]
            Q[n, c] = q
            O[n, c] = o
    tm = 0.0
    tv = 0.0
    for k in range(K):
        tm += mw[k] * dm[k]
        tv += vw[k] * dv[k]
    for k in range(K):
        dmw[k] = mw[k] * (dm[k] - tm)
        dvw[k] = vw[k] * (dv[k] - tv)
