"""Kernels of the compressed sparse geometry: a CSR or CSC matrix as (indptr, indices, data).

A compressed matrix has n_major slots (CSR's rows, CSC's columns); slot i stores the values
data[indptr[i]:indptr[i+1]] at the minor positions indices[indptr[i]:indptr[i+1]] (CSR's
columns, CSC's rows), and every position not stored is an implicit zero. The kernels read only
what is stored: the memory traffic is the nonzeros and their indices, never a dense matrix.

Two reductions, each with the values' count, mean, M2 (or the Lp power sum), min, max and NaN
count, the implicit zeros included in closed form (a block of z zeros has mean 0 and M2 0):

- per major slot (CSR axis=1, CSC axis=0): parallel over chunks of slots of about equal nnz
  (`bounds`), each slot's stored values
  in blocks by _moments.data_block (two reads of a block, the second from L1), merged with
  Chan's formula, then merged with the slot's implicit zeros;
- per minor position (CSR axis=0, CSC axis=1): the slots cut into K chunks of about equal nnz
  (`bounds`, from indptr alone, never from the thread count), each chunk a Welford pass into
  its own row of per-position partial records, merged in chunk order with Chan's formula and
  then with the implicit zeros (merge_minor). No atomics; the result does not depend on the thread count.

and two elementwise scalings of data (per major slot, per minor position), writing a new data
array (and the copy of indices the new matrix owns).

Every kernel checks the structure as it reads it and writes (bad, disorder) counts per chunk
of its parallel loop into `status` (no reduction variables across threads): bad is
an index outside [0, n_minor) or an indptr that decreases or runs past data (the caller
refuses the matrix; no read or write leaves the arrays), disorder an index not above the one
before it in its slot: unsorted or repeated indices, whose values the statistics must see
summed (the caller sums duplicates on a copy, as scipy's sum_duplicates does, and reads
again). `check` False skips these tests where the matrix is known canonical (the per-slot
kernels then read no indices; the per-position kernels always refuse an index out of range,
which they would write through).

The values are read in float64 (float32 data converted exactly) and every statistic is
float64. NaN: `omit` leaves NaN out of count, mean and M2 (nan_policy='omit'), else it enters
them; min and max ignore NaN either way (the caller applies Moments' rule from the NaN count).
"""
import numpy as np
from numba import njit, prange

from .._chan import TINY_POWER_SUM
from .._config import BLOCK, ELEMENTWISE_JIT, JIT
from ._moments import chan_merge, data_block, data_range, power_combine, power_sum


@njit(inline='always', **JIT)
def _open(indptr, indices, i, nnz, n_minor, check):
    """(start, stop, bad, disorder) of slot i: an indptr that decreases or runs past the data
    there makes the slot empty and bad 1 (the caller refuses the matrix); with check, bad
    and disorder also count the slot's indices (_structure)."""
    s = indptr[i]
    e = indptr[i + 1]
    if not 0 <= s <= e <= nnz:
        return 0, 0, 1, 0
    if check:
        b, d = _structure(indices[s:e], n_minor)
        return s, e, b, d
    return s, e, 0, 0


@njit(inline='always', **JIT)
def _structure(ir, n_minor):
    """(bad, disorder) of the indices ir of one slot: out of [0, n_minor), and not
    increasing."""
    bad = 0
    disorder = 0
    prev = -1
    for c in ir:
        bad += (c < 0) | (c >= n_minor)
        disorder += c <= prev
        prev = c
    return bad, disorder


@njit(parallel=True, **JIT)
def major_moments(indptr, indices, data, n_minor, omit, check, bounds, status, count, mean, m2,
                  lo, hi, nans):
    """Per major slot: count, mean and M2 of its values (the n_minor - stored implicit zeros
    included; NaN left out where omit), and min, max (NaN ignored, zeros included) and the NaN
    count; chunk k takes the slots bounds[k]:bounds[k+1] and writes its (bad, disorder) counts
    to status[k] (see the module docstring)."""
    nnz = data.size
    for k in prange(bounds.size - 1):
        kb = 0
        kd = 0
        for i in range(bounds[k], bounds[k + 1]):
            s, e, b, d = _open(indptr, indices, i, nnz, n_minor, check)
            kb += b
            kd += d
            xr = data[s:e]
            n = 0.0
            c = 0.0
            m = 0.0
            q = 0.0
            for b0 in range(0, e - s, BLOCK):
                xb = xr[b0:min(b0 + BLOCK, e - s)]
                if omit:
                    nb, centre, offset, qb = data_block(xb, True, c, n > 0.0)
                else:
                    nb, centre, offset, qb = data_block(xb, None, c, n > 0.0)
                if n == 0.0:
                    c = centre
                n, m, q = chan_merge(n, m, q, nb, offset, qb)
            a, z, nn = data_range(xr)
            zeros = float(n_minor - (e - s))
            # the zeros' offset from the centre is -c
            n, m, q = chan_merge(n, m, q, zeros, -c, 0.0)
            count[i] = n
            mean[i] = c + m
            m2[i] = q
            lo[i] = min(a, 0.0) if zeros > 0.0 else a
            hi[i] = max(z, 0.0) if zeros > 0.0 else z
            nans[i] = nn
        status[k, 0] = kb
        status[k, 1] = kd


# A per-position partial record: [count, NaN count, then mean and M2 (want_moments), then min
# and max (want_range)], side by side in one flat row per chunk so that a scattered update
# touches one cache line. Width 4 for moments or range alone, 6 for both: on (1e6, 1e4) at
# 0.1%, float64, 2 threads, the Welford pass took 35 ms with six separate (K, n) arrays,
# 25 ms with records of 6, 14 ms with records of 4 and no min/max.


@njit(inline='always', **JIT)
def _record(pk, o, v, omit, want_moments, want_range):
    """Merge the value v into the record at pk[o:o+width] (Welford; see the layout above)."""
    if v != v:
        pk[o + 1] += 1.0
        if omit:
            return
    nb = pk[o] + 1.0
    pk[o] = nb
    if want_moments:
        m = pk[o + 2]
        delta = v - m
        mu = m + delta / nb
        pk[o + 2] = mu
        pk[o + 3] += delta * (v - mu)
    if want_range:  # (selects, not branches: a new min or max is rare and unpredictable)
        r = o + 4 if want_moments else o + 2
        a = pk[r]
        b = pk[r + 1]
        pk[r] = v if v < a else a
        pk[r + 1] = v if v > b else b


@njit(parallel=True, **JIT)
def minor_moments(indptr, indices, data, n_minor, omit, want_moments, want_range, check, bounds,
                  status, part):
    """Per (chunk, minor position): the partial records (see above) of the stored values of
    the slots bounds[k]:bounds[k+1], in part (K, n_minor*width), overwritten. Welford per
    value; NaN counted, and left out where omit; min and max ignore NaN. With check, slot by
    slot, counting disorder and invalid slots; without (a canonical matrix), one loop over the
    chunk's values. An index out of range is counted in status[k, 0] and skipped."""
    K = part.shape[0]
    width = part.shape[1] // max(n_minor, 1)
    nnz = data.size
    for k in prange(K):
        pk = part[k]
        for j in range(n_minor):
            o = j * width
            pk[o] = 0.0
            pk[o + 1] = 0.0
            if want_moments:
                pk[o + 2] = 0.0
                pk[o + 3] = 0.0
            if want_range:
                r = o + 4 if want_moments else o + 2
                pk[r] = np.inf
                pk[r + 1] = -np.inf
        kb = 0
        kd = 0
        if check:
            for i in range(bounds[k], bounds[k + 1]):
                s, e, b, _ = _open(indptr, indices, i, nnz, n_minor, False)
                kb += b
                prev = -1
                ir = indices[s:e]
                xr = data[s:e]
                for q in range(ir.size):
                    col = ir[q]
                    if col < 0 or col >= n_minor:
                        kb += 1
                        continue
                    kd += col <= prev
                    prev = col
                    _record(pk, col * width, float(xr[q]), omit, want_moments, want_range)
        else:
            a = indptr[bounds[k]]
            b = indptr[bounds[k + 1]]
            ic = indices[a:b]
            xc = data[a:b]
            for q in range(ic.size):
                col = ic[q]
                if col < 0 or col >= n_minor:
                    kb += 1
                    continue
                _record(pk, col * width, float(xc[q]), omit, want_moments, want_range)
        status[k, 0] = kb
        status[k, 1] = kd


@njit(**JIT)
def merge_minor(part, n_minor, n_major, omit, want_moments, want_range, count, mean, m2, lo, hi,
                nans):
    """The (K, n_minor*width) partial records of minor_moments merged over K in order (Chan,
    min, max, sums), then with each position's n_major - stored implicit zeros, into the
    (n_minor,) results (mean and m2 0 without want_moments, min +inf and max -inf without
    want_range)."""
    K = part.shape[0]
    width = part.shape[1] // max(n_minor, 1)
    for j in range(n_minor):
        n = 0.0
        m = 0.0
        q = 0.0
        a = np.inf
        b = -np.inf
        x = 0.0
        o = j * width
        r = o + 4 if want_moments else o + 2
        for k in range(K):
            pk = part[k]
            if want_moments:
                n, m, q = chan_merge(n, m, q, pk[o], pk[o + 2], pk[o + 3])
            else:
                n += pk[o]
            if want_range:
                a = min(a, pk[r])
                b = max(b, pk[r + 1])
            x += pk[o + 1]
        zeros = n_major - (n + x if omit else n)
        n, m, q = chan_merge(n, m, q, zeros, 0.0, 0.0)
        count[j] = n
        mean[j] = m
        m2[j] = q
        lo[j] = min(a, 0.0) if zeros > 0.0 else a
        hi[j] = max(b, 0.0) if zeros > 0.0 else b
        nans[j] = x


@njit(parallel=True, **JIT)
def major_power_sums(indptr, indices, data, n_minor, p, check, bounds, status, out):
    """Per major slot: sum(|x|^p) of its stored values in float64 (p = inf: max |x|), blocks of
    BLOCK values summed and then added; NaN propagates. Chunks and status as major_moments."""
    nnz = data.size
    for k in prange(bounds.size - 1):
        kb = 0
        kd = 0
        for i in range(bounds[k], bounds[k + 1]):
            s, e, b, d = _open(indptr, indices, i, nnz, n_minor, check)
            kb += b
            kd += d
            xr = data[s:e]
            acc = 0.0
            for b0 in range(0, e - s, BLOCK):
                acc = power_combine(p, acc, power_sum(xr[b0:min(b0 + BLOCK, e - s)], p, 0.0))
            out[i] = acc
        status[k, 0] = kb
        status[k, 1] = kd


@njit(parallel=True, **JIT)
def minor_power_sums(indptr, indices, data, p, check, bounds, status, part):
    """Per (chunk, minor position) of the (K, n_minor, 2) array part (overwritten): sum(|x|^p)
    in float64 (p = inf: max |x|) and max |x| of the stored values of the slots
    bounds[k]:bounds[k+1] (the max beside the sum, in its cache line: the rescaling test of
    _chan.lp_norms then needs no second pass, where empty positions, whose sum is 0, would ask
    for one); NaN propagates. merge_minor_norms combines them. status as minor_moments."""
    K, n_minor, _ = part.shape
    nnz = data.size
    for k in prange(K):
        pk = part[k]
        for j in range(n_minor):
            pk[j, 0] = 0.0
            pk[j, 1] = 0.0
        kb = 0
        kd = 0
        for i in range(bounds[k], bounds[k + 1]):
            s, e, b, _ = _open(indptr, indices, i, nnz, n_minor, False)
            kb += b
            prev = -1
            ir = indices[s:e]
            xr = data[s:e]
            for q in range(ir.size):
                col = ir[q]
                if col < 0 or col >= n_minor:
                    kb += 1
                    continue
                if check:
                    kd += col <= prev
                prev = col
                v = abs(float(xr[q]))
                if p == 2.0:
                    pk[col, 0] += v * v
                elif p == 1.0:
                    pk[col, 0] += v
                elif p != np.inf:
                    pk[col, 0] += v ** p
                big = pk[col, 1]
                pk[col, 1] = v if (v > big or v != v) else big
        status[k, 0] = kb
        status[k, 1] = kd


@njit(**JIT)
def merge_minor_norms(part, p, out, big):
    """The (K, n_minor, 2) partials of minor_power_sums combined over K in order: out the sums
    (p = inf: the max), big the max |x|."""
    K, M, _ = part.shape
    for j in range(M):
        a = 0.0
        b = 0.0
        for k in range(K):
            a = power_combine(p, a, part[k, j, 0])
            b = power_combine(np.inf, b, part[k, j, 1])
        out[j] = b if p == np.inf else a
        big[j] = b


@njit(inline='always', **JIT)
def _norm_of(xr, p):
    """||xr||_p of one slot's values in float64 (p = inf: max |x|; NaN propagates), summed
    again with x scaled by its max |x| where the sum of |x|^p overflowed or fell to where terms
    may have underflowed (_chan.lp_norms' rule, here where the slot is still in L1)."""
    acc = 0.0
    if p == np.inf:
        for v in xr:
            a = abs(float(v))
            acc = a if (a > acc or a != a) else acc
        return acc
    if p == 2.0:
        for v in xr:
            f = float(v)
            acc += f * f
    elif p == 1.0:
        for v in xr:
            acc += abs(float(v))
    else:
        for v in xr:
            acc += abs(float(v)) ** p
    if acc != acc or (acc > TINY_POWER_SUM and acc < np.inf):
        return np.sqrt(acc) if p == 2.0 else (acc if p == 1.0 else acc ** (1.0 / p))
    big = 0.0
    for v in xr:
        a = abs(float(v))
        big = a if a > big else big
    if not (big > 0.0 and big < np.inf):
        return np.sqrt(acc) if p == 2.0 else (acc if p == 1.0 else acc ** (1.0 / p))
    acc = 0.0
    for v in xr:
        a = abs(float(v)) / big
        acc += a * a if p == 2.0 else a ** p
    return big * (np.sqrt(acc) if p == 2.0 else acc ** (1.0 / p))


@njit(inline='always', **ELEMENTWISE_JIT)
def _scale_slot(xr, f, yr):
    """yr = xr*f (float64, rounded once to yr's dtype). On the slot's slices, not index ranges
    of the whole arrays: Numba's loops over a slice took (1e6, 1e4)-at-0.1% float32 rows in
    11.5 ms on 2 threads against 17.5 ms over index ranges (scikit-learn's serial Cython loop:
    18.8 ms)."""
    for q in range(xr.size):
        yr[q] = float(xr[q]) * f


@njit(inline='always', **ELEMENTWISE_JIT)
def _infinities(xr):
    """How many values of xr are infinite."""
    k = 0
    for v in xr:
        k += abs(float(v)) == np.inf
    return k


@njit(inline='always', **ELEMENTWISE_JIT)
def _copy_slot(ir, oi):
    for q in range(ir.size):
        oi[q] = ir[q]


@njit(parallel=True, **ELEMENTWISE_JIT)
def normalize_major(indptr, indices, data, n_minor, p, eps, keep_zero, check, bounds, status,
                    norms, out_indices, out_data):
    """Every major slot over its Lp norm in one read: norms[i] = ||slot||_p (_norm_of), then
    out_data = data*f with f = 1/max(norm, eps) (NaN propagates), or f = 1 where keep_zero
    and the norm is 0 (scikit-learn's sparse rule), while the slot is in L1; out_indices =
    indices where not None; out_data may be data. status[k]: (bad, disorder); with disorder
    the caller takes the norms of the canonical matrix again."""
    nnz = data.size
    for k in prange(bounds.size - 1):
        kb = 0
        kd = 0
        for i in range(bounds[k], bounds[k + 1]):
            s, e, b, d = _open(indptr, indices, i, nnz, n_minor, check)
            kb += b
            kd += d
            xr = data[s:e]
            n = _norm_of(xr, p)
            norms[i] = n
            if keep_zero and n == 0.0:
                f = 1.0
            else:
                f = 1.0 / (n if (n > eps or n != n) else eps)
            _scale_slot(xr, f, out_data[s:e])
            if out_indices is not None:
                _copy_slot(indices[s:e], out_indices[s:e])
        status[k, 0] = kb
        status[k, 1] = kd


@njit(parallel=True, **ELEMENTWISE_JIT)
def scale_major(indptr, indices, data, scale, bounds, status, out_indices, out_data):
    """out_data = data*scale[slot] for every stored value (in float64, rounded once to data's
    dtype), and out_indices = indices where out_indices is not None (the copy a new matrix
    owns); chunk k takes the slots bounds[k]:bounds[k+1]. out_data may be data (in place).
    status[k]: (slots whose indptr is invalid, left unwritten; infinite values read)."""
    nnz = data.size
    for k in prange(bounds.size - 1):
        kb = 0
        ki = 0
        for i in range(bounds[k], bounds[k + 1]):
            s, e, b, _ = _open(indptr, indices, i, nnz, 0, False)
            kb += b
            xr = data[s:e]
            ki += _infinities(xr)
            _scale_slot(xr, scale[i], out_data[s:e])
            if out_indices is not None:
                _copy_slot(indices[s:e], out_indices[s:e])
        status[k, 0] = kb
        status[k, 1] = ki


@njit(parallel=True, **ELEMENTWISE_JIT)
def scale_minor(indices, data, scale, chunk, status, out_indices, out_data):
    """out_data = data*scale[index] for every stored value (in float64, rounded once), chunks
    of `chunk` values in parallel (status: one row per chunk); out_indices = indices where not
    None. out_data may be data. status[k]: (indices outside scale, their values written NaN;
    infinite values read)."""
    nnz = data.size
    n = scale.size
    for k in prange(status.shape[0]):
        kb = 0
        ki = 0
        a = k * chunk
        b = min(a + chunk, nnz)
        ic = indices[a:b]
        xc = data[a:b]
        yc = out_data[a:b]
        for q in range(ic.size):
            c = ic[q]
            v = float(xc[q])
            ki += abs(v) == np.inf
            if c < 0 or c >= n:
                kb += 1
                yc[q] = np.nan
            else:
                yc[q] = v * scale[c]
        if out_indices is not None:
            _copy_slot(ic, out_indices[a:b])
        status[k, 0] = kb
        status[k, 1] = ki
