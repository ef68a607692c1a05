"""scipy.sparse input (issue 30): normalize, moments, Moments.update, Normalizer,
StandardScaler(with_mean=False), MaxAbsScaler and maxabs_scale against scikit-learn 1.9.1 on
the same sparse input, against the dense path on X.toarray(), and against float64 NumPy;
structure (index dtypes, unsorted indices, duplicates, explicit zeros, empty rows and columns)
and the refusals."""
import numpy as np
import pytest

import numbanorm as nbn

sp = pytest.importorskip("scipy.sparse")
skp = pytest.importorskip("sklearn.preprocessing")
from sklearn.utils.sparsefuncs import mean_variance_axis  # noqa: E402

TOL = {np.float64: 1e-12, np.float32: 2e-6}
P = {"l1": 1.0, "l2": 2.0, "max": np.inf}


def _random(rng, shape=(400, 30), density=0.1, fmt="csr", kind="array", dtype=np.float64,
            nan=False):
    """A random sparse matrix of values in [-3, 5) with row 3 and column 5 empty."""
    D = np.where(rng.random(shape) < density, rng.random(shape) * 8 - 3, 0.0).astype(dtype)
    D[3] = 0
    D[:, 5] = 0
    X = getattr(sp, f"{fmt}_{kind}")(D)
    if nan:
        X.data[::9] = np.nan
    return X


def _close(a, b, dtype):
    """a and b (sparse or dense) equal within the dtype's tolerance, relative to b's scale."""
    a = a.toarray() if sp.issparse(a) else np.asarray(a)
    b = b.toarray() if sp.issparse(b) else np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * np.nanmax(np.abs(b)),
                               equal_nan=True)


def _same_attrs(a, b, names, dtype):
    for name in names:
        va, vb = getattr(a, name), getattr(b, name)
        if vb is None:
            assert va is None, name
            continue
        assert np.asarray(va).dtype == np.asarray(vb).dtype, name
        assert np.shape(va) == np.shape(vb), name
        np.testing.assert_allclose(va, vb, rtol=TOL[dtype], equal_nan=True, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_normalize_and_normalizer_match_scikit_learn(rng, fmt, dtype):
    for kind in ("array", "matrix"):
        X = _random(rng, fmt=fmt, kind=kind, dtype=dtype)  # (an empty row: norm 0, kept)
        before = X.copy()
        for norm in ("l1", "l2", "max"):
            for axis in (0, 1):
                y = nbn.normalize(X, p=P[norm], dim=axis)
                assert type(y) is type(X) and y.dtype == X.dtype
                np.testing.assert_array_equal(y.indices, X.indices)
                np.testing.assert_array_equal(y.indptr, X.indptr)
                _close(y, skp.normalize(X, norm=norm, axis=axis), dtype)
                # the dense path on the same values
                _close(y, nbn.normalize(X.toarray(), p=P[norm], dim=axis), dtype)
            ours, ref = nbn.Normalizer(norm).fit_transform(X), skp.Normalizer(norm).fit_transform(X)
            assert type(ours) is type(ref)
            _close(ours, ref, dtype)
        _close(nbn.normalize(X, dim=None), X / np.sqrt((X.toarray().astype(float) ** 2).sum()),
               dtype)
        assert (X != before).nnz == 0 and X.indices is not y.indices


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_standard_scaler_matches_scikit_learn(rng, dtype):
    names = ("mean_", "var_", "scale_", "n_samples_seen_")
    for fmt in ("csr", "csc"):
        X = _random(rng, fmt=fmt, dtype=dtype, nan=True)
        w = rng.random(X.shape[0])
        for kw in (dict(with_mean=False), dict(with_mean=False, with_std=False)):
            for weight in (None, w):
                a = nbn.StandardScaler(**kw).fit(X, sample_weight=weight)
                b = skp.StandardScaler(**kw).fit(X, sample_weight=weight)
                _same_attrs(a, b, names, dtype)
            ya, yb = a.transform(X), b.transform(X)
            assert type(ya) is type(yb)
            _close(ya, yb, dtype)
            za, zb = a.inverse_transform(ya), b.inverse_transform(yb)
            assert type(za) is type(zb)
            _close(za, zb, dtype)
            # partial_fit over chunks, weighted and not
            a, b = nbn.StandardScaler(**kw), skp.StandardScaler(**kw)
            for k in range(0, X.shape[0], 100):
                rows = slice(k, k + 100)
                a.partial_fit(X[rows], sample_weight=w[rows])
                b.partial_fit(X[rows], sample_weight=w[rows])
            _same_attrs(a, b, names, dtype if dtype == np.float64 else np.float32)
    with pytest.raises(ValueError, match="Cannot center sparse matrices"):
        nbn.StandardScaler().fit(X)
    fitted = nbn.StandardScaler().fit(X.toarray())
    with pytest.raises(ValueError, match="Cannot center sparse matrices"):
        fitted.transform(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_abs_scaler_matches_scikit_learn(rng, dtype):
    names = ("max_abs_", "scale_", "n_samples_seen_")
    for X in (_random(rng, fmt="csc", dtype=dtype, nan=True),
              _random(rng, fmt="csr", kind="matrix", dtype=dtype, nan=True).toarray()):
        a, b = nbn.MaxAbsScaler().fit(X), skp.MaxAbsScaler().fit(X)
        _same_attrs(a, b, names, dtype)
        for f in ("transform", "inverse_transform"):
            ya, yb = getattr(a, f)(X), getattr(b, f)(X)
            assert type(ya) is type(yb) and ya.dtype == yb.dtype
            _close(ya, yb, dtype)
        for axis in (0, 1):
            ya, yb = nbn.maxabs_scale(X, axis=axis), skp.maxabs_scale(X, axis=axis)
            assert type(ya) is type(yb)
            _close(ya, yb, dtype)
        a, b = nbn.MaxAbsScaler(clip=True), skp.MaxAbsScaler(clip=True)
        for k in range(0, X.shape[0], 150):
            a.partial_fit(X[k:k + 150])
            b.partial_fit(X[k:k + 150])
        _same_attrs(a, b, names, dtype)
        _close(a.transform(3 * X), b.transform(3 * X), dtype)
    v = rng.standard_normal(50)
    _close(nbn.maxabs_scale(v), skp.maxabs_scale(v), np.float64)
    with pytest.raises(ValueError, match="axis"):
        nbn.maxabs_scale(v, axis=2)


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_moments_count_the_implicit_zeros(rng, nan_policy):
    for fmt in ("csr", "csc"):
        X = _random(rng, fmt=fmt, nan=True)
        D = X.toarray()
        for axis in (0, 1, None):
            m, ref = nbn.moments(X, axis, nan_policy), nbn.moments(D, axis, nan_policy)
            assert m.shape == ref.shape
            for f in ("count", "mean", "m2", "min", "max"):
                np.testing.assert_allclose(getattr(m, f), getattr(ref, f), rtol=1e-12,
                                           atol=1e-12, equal_nan=True, err_msg=f)
    # scikit-learn's mean_variance_axis, NaN ignored as its scalers do
    mean, var = mean_variance_axis(X, 0)
    m = nbn.moments(X, 0, "omit")
    np.testing.assert_allclose(m.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(m.var(), var, rtol=1e-12)
    with pytest.raises(ValueError, match="nan"):
        nbn.moments(X, 0, "raise")


def test_sparse_chunks_merge_in_any_order(rng):
    """1000 sparse chunks' statistics merged in random orders (Moments.update, merge) equal
    the one-shot statistics within 1e-13."""
    X = _random(rng, shape=(5000, 12), density=0.3) * 1e3 + 0
    one = nbn.moments(X, 0)
    chunks = [X[k:k + 5] for k in range(0, 5000, 5)]
    stream = nbn.Moments.empty((12,), axis=0)
    for c in chunks:
        stream.update(c)
    parts = [nbn.moments(c, 0) for c in chunks]
    for order in (rng.permutation(1000), rng.permutation(1000)):
        merged = nbn.Moments.empty((12,))
        for i in order:
            merged = merged + parts[i]
        for m in (stream, merged):
            np.testing.assert_array_equal(m.count, one.count)
            np.testing.assert_allclose(m.mean, one.mean, rtol=1e-13)
            np.testing.assert_allclose(m.m2, one.m2, rtol=1e-13)
            np.testing.assert_array_equal(m.min, one.min)
            np.testing.assert_array_equal(m.max, one.max)


def test_float32_far_from_zero_keeps_its_variance(rng):
    """float32 features whose stored values have mean 1e6 and std 1: the variance within 1e-5
    relative, in fit and in partial_fit over 10 chunks (scikit-learn's float32 partial_fit
    misses by ~1e-3 here, scripts/sparse_accuracy.py; its one-shot fit holds)."""
    n, d = 20000, 4
    X = sp.csr_array((1e6 + rng.standard_normal((n, d))).astype(np.float32))
    dense = X.toarray()
    exact = dense.astype(np.float64).var(axis=0)
    fit = nbn.StandardScaler(with_mean=False).fit(X)
    stream = nbn.StandardScaler(with_mean=False)
    for k in range(0, n, n // 10):
        stream.partial_fit(X[k:k + n // 10])
    for est in (fit, stream, skp.StandardScaler(with_mean=False).fit(X)):
        np.testing.assert_allclose(est.var_, exact, rtol=1e-5)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_structure(rng, index_dtype):
    """Index dtypes, unsorted indices, duplicates (summed, as scipy means them), explicit
    zeros, empty rows; COO/LIL/DIA/BSR/DOK converted once; read-only data; input
    unchanged."""
    D = np.zeros((6, 5))
    D[0, 1], D[0, 3], D[2, 0], D[2, 4], D[5, 2] = 3.0, -1.0, 2.0, 4.0, -6.0
    # row 0 stores column 3 first, column 1 twice (1 + 2) and an explicit zero at column 4
    data = np.array([-1.0, 1.0, 2.0, 0.0, 4.0, 2.0, -6.0])
    indices = np.array([3, 1, 1, 4, 4, 0, 2], index_dtype)
    indptr = np.array([0, 4, 4, 6, 6, 6, 7], index_dtype)
    X = sp.csr_array((data, indices, indptr), shape=D.shape)
    assert not X.has_canonical_format
    if index_dtype == np.int32:  # (read-only arrays compile their own kernels: once is enough)
        X.data.flags.writeable = False
    keep = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    for axis in (0, 1):
        m, ref = nbn.moments(X, axis), nbn.moments(D, axis)
        for f in ("count", "mean", "m2", "min", "max"):
            np.testing.assert_allclose(getattr(m, f), getattr(ref, f), rtol=1e-14, atol=1e-14)
        y = nbn.normalize(X, dim=axis)
        assert y.indices.dtype == index_dtype and y.nnz == X.nnz  # the pattern kept
        np.testing.assert_allclose(y.toarray(), nbn.normalize(D, dim=axis), rtol=1e-14)
    for scaler in (nbn.MaxAbsScaler(), nbn.StandardScaler(with_mean=False)):
        np.testing.assert_allclose(scaler.fit_transform(X).toarray(),
                                   scaler.fit_transform(D), rtol=1e-14)
    for a, b in zip(keep, (X.data, X.indices, X.indptr)):
        np.testing.assert_array_equal(a, b)
    C = sp.csr_array(D)
    for other in (sp.coo_array(C), sp.lil_array(C), sp.dia_array(C), sp.bsr_array(C),
                  sp.dok_array(C)):
        y = nbn.normalize(other)
        assert y.format == "csr"
        np.testing.assert_allclose(y.toarray(), nbn.normalize(D), rtol=1e-14)
        np.testing.assert_allclose(nbn.MaxAbsScaler().fit_transform(other).toarray(),
                                   skp.MaxAbsScaler().fit_transform(D), rtol=1e-14)
    ints = sp.csr_array(D.astype(np.int64))
    assert nbn.maxabs_scale(ints).dtype == np.float64


def test_refusals(rng):
    X = _random(rng)
    for f in (lambda: nbn.zscore(X), lambda: nbn.minmax_scale(X),
              lambda: nbn.minmax_scale(X, feature_range=(0, 1))):
        with pytest.raises(TypeError, match="fills in the zeros.*maxabs_scale"):
            f()
    with pytest.raises(TypeError, match="scipy.sparse"):
        nbn.layer_norm(X, 30)
    with pytest.raises(TypeError, match="out="):
        nbn.normalize(X, out=X.copy())
    with pytest.raises(TypeError, match="complex"):
        nbn.normalize(X.astype(np.complex128))
    with pytest.raises(TypeError, match="dense"):
        nbn.normalize_forward(X)
    with pytest.raises(ValueError, match="device='cuda'"):
        nbn.normalize(X, device="cuda")
    bad = sp.csr_array((np.ones(2), np.array([1, 9]), np.array([0, 2, 2])), shape=(2, 3))
    for f in (lambda: nbn.moments(bad, 0), lambda: nbn.normalize(bad, dim=0),
              lambda: nbn.MaxAbsScaler().fit(bad)):
        with pytest.raises(ValueError, match="not a valid CSR matrix"):
            f()
    Xi = X.copy()
    Xi.data[4] = np.inf
    for f in (lambda: nbn.StandardScaler(with_mean=False).fit(Xi),
              lambda: nbn.MaxAbsScaler().fit(Xi),
              lambda: nbn.MaxAbsScaler().fit(X).transform(Xi),
              lambda: nbn.Normalizer().fit_transform(Xi)):
        with pytest.raises(ValueError, match="infinity"):
            f()
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(sp.csr_matrix(X), chunks=(100, 30), asarray=False)
    with pytest.raises(TypeError, match="scipy.sparse chunks"):
        nbn.normalize(lazy)


def test_norms_of_huge_and_tiny_values():
    """Sums of squares that overflow (1e200, 1e300) or underflow (1e-200) are taken again
    scaled by the slot's max |x|, in the one-read row kernel and in the per-column and
    whole-matrix paths: the dense path's numbers."""
    D = np.zeros((4, 6))
    D[0, :3], D[1, 2:5], D[2, 1], D[3, 0] = 1e200, 1e-200, 3.0, -1e300
    for fmt in (sp.csr_array, sp.csc_array):
        for dim in (0, 1, None):
            np.testing.assert_allclose(nbn.normalize(fmt(D), dim=dim).toarray(),
                                       nbn.normalize(D, dim=dim), rtol=1e-14, atol=0)
