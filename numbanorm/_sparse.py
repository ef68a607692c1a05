"""scipy.sparse input for the data family: CSR and CSC matrices (the *_matrix and *_array
classes), read by the compressed-sparse kernels (numbanorm.cpu.sparse, launched by
numbanorm.cpu._host), never densified. normalize, moments / Moments.update, Normalizer,
StandardScaler(with_mean=False), MaxAbsScaler and maxabs_scale take them; what would fill in
the zeros (centring: zscore, minmax_scale, StandardScaler(with_mean=True), the layers) refuses
them.

- `statistics(m, axis, nan_policy)`: per-slot (count, mean, m2, lo, hi, nans) over axis 0, 1 or
  None, the implicit zeros counted (as scikit-learn's mean_variance_axis counts them);
- `norms(m, axis, p)`: per-slot Lp norms (the zeros add nothing);
- `normalized(m, axis, p, eps)`: each row or column over its norm (one read along the major
  axis);
- `scaled(m, along, scale)`: every stored value times the scale of its row (along=0) or column
  (along=1), as a new matrix of m's class and format with the same sparsity pattern (its own
  copies of indices and indptr, as scikit-learn's copy=True), or in m's data (in place);
- `weighted_moments(m, w)`: the sample-weighted per-column moments (NumPy, two-pass).

Duplicates and unsorted indices: the kernels count, as they read, indices that are not
increasing within their slot; the statistics and norms are then taken again from a copy with
duplicates summed (scipy's sum_duplicates), so a repeated entry counts as the one value scipy
means by it. Scaling needs no such step: scaling each stored part of a value scales the value.
A matrix whose indices or indptr point outside its shape is refused (ValueError).

scipy is not a dependency: numbanorm._device.is_sparse recognises a sparse matrix without
importing scipy, and this module is imported on first sparse input.
"""
import math

import numpy as np

from ._chan import lp_norms, rescaled_norms
from .cpu import _host


def _refuse_invalid(m, bad, name):
    """The ValueError for a matrix whose kernels counted `bad` structure errors (none: no
    error)."""
    if bad:
        raise ValueError(f"{name} is not a valid {m.format.upper()} matrix: {bad} of its indptr "
                         f"or index entries point outside its shape {m.shape}")


class Compressed:
    """A validated CSR or CSC matrix m as the kernels read it: indptr, indices, data
    (contiguous), n_major slots (CSR's rows) of n_minor positions; canonical when known to have
    sorted indices without duplicates (scipy's cached flag, or the kernels' check)."""

    __slots__ = ("m", "csr", "indptr", "indices", "data", "n_major", "n_minor", "canonical")

    def __init__(self, m):
        self.m = m
        self.csr = m.format == "csr"
        self.indptr = np.ascontiguousarray(m.indptr)
        self.indices = np.ascontiguousarray(m.indices)
        self.data = np.ascontiguousarray(m.data)
        rows, cols = m.shape
        self.n_major, self.n_minor = (rows, cols) if self.csr else (cols, rows)
        # (scipy caches what it learnt of the matrix here; absent, the kernels check)
        self.canonical = getattr(m, "_has_canonical_format", False) is True

    def per_major(self, axis):
        """Whether statistics over `axis` (0: per column, 1: per row) are per major slot."""
        return (axis == 1) == self.csr

    def run(self, step, name="X"):
        """step(self, check) -> (result, bad, disorder) on the canonical matrix: a matrix with
        disorder is replaced (here, never in the caller's object) by a copy with duplicates
        summed and indices sorted, and step runs again; a matrix known canonical is marked so
        on the caller's object (scipy's own cache), so that the next call reads no indices
        for the check."""
        res, bad, disorder = step(self, not self.canonical)
        _refuse_invalid(self.m, bad, name)
        if disorder:
            m = self.m.copy()
            m.sum_duplicates()
            fresh = Compressed(m)
            self.indptr, self.indices, self.data = fresh.indptr, fresh.indices, fresh.data
            self.canonical = True
            res, _, _ = step(self, False)
        elif not self.canonical:
            self.canonical = True
            self.m.has_canonical_format = True
        return res


def statistics(m, axis, nan_policy, want_moments=True, want_range=True, name="X"):
    """Per-slot float64 (count, mean, m2, lo, hi, nans) of the CSR/CSC m over axis (0: per
    column, 1: per row, None: the whole matrix, one slot), the implicit zeros included: count,
    mean and M2 of the values that enter (nan_policy 'omit': the non-NaN ones), min and max
    (NaN where a NaN entered with 'propagate', Moments' rule), NaN count. Per position
    (CSR's columns), want_moments False leaves mean and m2 out (0) and want_range False min and
    max (+-inf): narrower partial records, a faster pass."""
    if nan_policy == "raise" and np.isnan(m.data).any():
        raise ValueError("The input contains nan values (nan_policy='raise'; 'omit' leaves "
                         "NaN out, 'propagate' keeps it in the results)")
    omit = nan_policy == "omit"
    c = Compressed(m)
    per_major = True if axis is None else c.per_major(axis)
    res = c.run(lambda c, check: _host.sparse_moments(c, per_major, omit, want_moments,
                                                      want_range, check), name)
    if axis is None:
        res = _host.merge_slots(res)
    return _host._propagated(res, omit)


def norms(m, axis, p, name="x"):
    """Per-slot float64 Lp norms of the CSR/CSC m over axis (0: per column, 1: per row, None:
    the whole matrix), rescaled by the max |x| where the sums over- or underflow (as the
    dense norms: numbanorm._chan.lp_norms; the per-position kernels hand the max over with
    the sums, so that empty positions cost no second pass)."""
    c = Compressed(m)
    per_major = True if axis is None else c.per_major(axis)
    maxima = {}

    def power_sums(q):
        if q == math.inf and "big" in maxima:
            return maxima["big"]
        s, big = c.run(lambda c, check: _host.sparse_power_sums(c, per_major, q, check), name)
        if axis is None:
            s = np.array([s.max(initial=0.0) if q == math.inf else s.sum()])
        if big is not None:
            maxima["big"] = big
        return s

    return lp_norms(power_sums, p, lambda redo, big: rescaled_norms(
        lambda slot: _slot_values(c, axis, per_major, slot), p, redo, big))


def normalized(m, axis, p, eps, keep_zero=False, inplace=False, name="x"):
    """(matrix, norms): each row (axis=1) or column (axis=0) of the CSR/CSC m times
    1/max(||.||_p, eps) (NaN propagates; 1 where keep_zero and the norm is 0), as a new matrix
    of m's class and format with m's pattern, or in m's own data (inplace). Slots along the
    major axis (CSR's rows) take one read (cpu.sparse.normalize_major); the others, and a
    matrix with duplicates, the norms and then the scaling."""
    c = Compressed(m)
    if c.per_major(axis) and (c.canonical or not inplace):
        out_data = m.data if inplace else np.empty_like(c.data)
        out_indices = None if inplace else np.empty_like(c.indices)
        norm, bad, disorder = _host.sparse_normalize(c, p, eps, keep_zero, not c.canonical,
                                                     out_indices, out_data)
        _refuse_invalid(m, bad, name)
        if not disorder:
            if not c.canonical:
                m.has_canonical_format = True
            if inplace:
                return m, norm
            return like(m, out_data, out_indices, c.indptr.copy()), norm
    norm = norms(m, axis, p, name)
    with np.errstate(divide="ignore"):
        scale = 1.0 / np.maximum(norm, eps)
    if keep_zero:
        scale = np.where(norm == 0, 1.0, scale)
    return scaled(m, 0 if axis == 1 else 1, scale, inplace, name)[0], norm


def _slot_values(c, axis, per_major, slot):
    """The stored values of one slot (the rare rescaling path)."""
    if axis is None:
        return c.data
    if per_major:
        return c.data[c.indptr[slot]:c.indptr[slot + 1]]
    return c.data[c.indices == slot]


def scaled(m, along, scale64, inplace=False, name="X"):
    """(matrix, infinities): every stored value of the CSR/CSC m times scale64 of its row
    (along=0) or column (along=1), computed in float64 and rounded once to m's dtype, as a new
    matrix of m's class and format with m's sparsity pattern (new data, its own copies of
    indices and indptr) or, inplace, in m's own data; infinities: how many infinite values were
    read (for the callers that refuse them)."""
    c = Compressed(m)
    per_major = (along == 0) == c.csr
    scale64 = np.ascontiguousarray(scale64, dtype=np.float64)
    if inplace:
        out_data, out_indices = m.data, None
    else:
        out_data, out_indices = np.empty_like(c.data), np.empty_like(c.indices)
    bad, infs = _host.sparse_scale(c, per_major, scale64, out_indices, out_data)
    _refuse_invalid(m, bad, name)
    if inplace:
        return m, infs
    return like(m, out_data, out_indices, c.indptr.copy()), infs


def like(m, data, indices, indptr):
    """A matrix of m's class, format and shape holding these arrays as they are (the
    constructor would check, and may convert, the index arrays: a pass over them), with m's
    knowledge of its index order."""
    out = type(m)(m.shape, dtype=data.dtype)
    out.data, out.indices, out.indptr = data, indices, indptr
    for flag in ("_has_sorted_indices", "_has_canonical_format"):
        if hasattr(m, flag):
            setattr(out, flag, getattr(m, flag))
        elif hasattr(out, flag):
            delattr(out, flag)
    return out


def weighted_moments(m, w):
    """(count, mean, m2) per column of the CSR/CSC m with sample weights w (n_samples,):
    weighted count, mean and M2 of the non-NaN values, implicit zeros with their rows' weights;
    two-pass in float64 (NumPy: sample weights do not go through the kernels)."""
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    c = Compressed(m)
    major = np.repeat(np.arange(c.n_major), np.diff(c.indptr))
    rows, cols = (major, c.indices) if c.csr else (c.indices, major)
    n = m.shape[1]
    v = c.data.astype(np.float64)
    nan = np.isnan(v)
    wv = np.where(nan, 0.0, w[rows])
    v = np.where(nan, 0.0, v)
    weight = w.sum() - np.bincount(cols, weights=np.where(nan, w[rows], 0.0), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(cols, weights=wv * v, minlength=n) / weight
        stored = np.bincount(cols, weights=wv, minlength=n)
        dev = np.bincount(cols, weights=wv * (v - mean[cols]) ** 2, minlength=n)
    m2 = dev + (weight - stored) * mean * mean
    return weight, mean, m2
