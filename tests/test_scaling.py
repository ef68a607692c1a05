"""zscore, minmax_scale, normalize: against the float64 oracle, scipy, scikit-learn and
PyTorch (forward and autograd), finite differences, every layout of axes, NaN policies, bad
input and numerical robustness."""
import numpy as np
import pytest

import numbanorm as nbn
import oracle
from numbanorm._layout import layout

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}

# (shape, axis): leading, trailing, both ends (slabs), interleaved (copied), negative, None
AXES = [((40, 7), 0), ((7, 40), 1), ((6, 5, 7), (0, 2)), ((6, 5, 7), None), ((4, 5, 6, 3), (1, 3)),
        ((30, 5), -1), ((4, 5, 6), 1), ((3, 4, 5, 6), (0, 1)), ((3, 4, 5, 6), (2, 3)),
        ((2, 3, 4, 5), (0, 2)), ((1, 37, 1), 1), ((1, 1), 0), ((1300, 3), 0), ((3, 1300), 1),
        ((0, 4), 1)]
ORDERS = ["C", "F", "strided"]


def _data(rng, shape, dtype, order="C", mean=1.0, std=2.0):
    x = (rng.standard_normal(shape) * std + mean).astype(dtype)
    if order == "F":
        return np.asfortranarray(x)
    if order == "strided":
        big = np.empty(tuple(2 * s for s in shape), dtype)
        v = big[tuple(slice(None, None, 2) for _ in shape)]
        v[...] = x
        return v
    return x


def _close(actual, expected, dtype, scale=1.0):
    assert actual.dtype == np.dtype(dtype)
    t = TOL[dtype]
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=t["rtol"],
                               atol=t["atol"] * scale, equal_nan=True)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", AXES)
def test_zscore_matches_oracle(rng, shape, axis, dtype, order):
    x = _data(rng, shape, dtype, order)
    before = x.copy()
    for ddof in (0, 1):
        _close(nbn.zscore(x, axis=axis, ddof=ddof), oracle.zscore(x, axis, ddof), dtype)
    xn = x.copy(order="K")
    xn[np.unravel_index(np.arange(0, x.size, 5), x.shape)] = np.nan
    _close(nbn.zscore(xn, axis=axis, nan_policy="omit"), oracle.zscore(xn, axis, 0, True),
           dtype)
    _close(nbn.zscore(xn, axis=axis), oracle.zscore(xn, axis, 0), dtype)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", AXES)
def test_minmax_and_normalize_match_oracle(rng, shape, axis, dtype, order):
    x = _data(rng, shape, dtype, order)
    _close(nbn.minmax_scale(x, (-2, 3), axis=axis), oracle.minmax_scale(x, (-2, 3), axis), dtype,
           5.0)
    dim = axis if axis is not None else tuple(range(x.ndim))
    for p in (1.0, 2.0, 3.0, 0.5, np.inf):
        _close(nbn.normalize(x, p, dim), oracle.normalize(x, p, dim), dtype)


def test_layouts_copy_only_when_they_must(rng):
    """No copy for leading or trailing axes of C arrays, both ends (slabs), or any axes of
    Fortran arrays; interleaved axes copy once."""
    x = rng.standard_normal((4, 5, 6, 7))
    for axes, kind in (((0,), "columns"), ((0, 1), "columns"), ((3,), "rows"),
                       ((2, 3), "rows"), ((0, 3), "slabs"), ((0, 2, 3), "slabs"),
                       ((1,), "columns"), ((1, 2), "columns")):
        lay = layout(x, axes)
        assert lay.kind == kind and not lay.copies, axes
        assert np.shares_memory(lay.read(x), x)
        f = np.asfortranarray(x)
        lay = layout(f, axes)
        assert not lay.copies and np.shares_memory(lay.read(f), f), axes
    lay = layout(x, (0, 2))
    assert lay.copies and not np.shares_memory(lay.read(x), x)


def test_against_scipy(rng):
    stats = pytest.importorskip("scipy.stats")
    for dtype in DTYPES:
        x = _data(rng, (50, 6, 4), dtype)
        x[3, 2, 1] = np.nan
        x[:, 4, :] = 7.5  # constant slices: NaN
        for axis in (0, 1, (0, 2), None, -1):
            for ddof in (0, 2):
                for policy in ("propagate", "omit"):
                    ours = nbn.zscore(x, axis=axis, ddof=ddof, nan_policy=policy)
                    theirs = stats.zscore(x, axis=axis, ddof=ddof, nan_policy=policy)
                    assert ours.dtype == theirs.dtype
                    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
                    np.testing.assert_allclose(ours, theirs, equal_nan=True,
                                               **({"rtol": 2e-5, "atol": 2e-5}
                                                  if dtype == np.float32 else TOL[dtype]))
        with pytest.raises(ValueError, match="nan"):
            nbn.zscore(x, nan_policy="raise")
        with pytest.raises(ValueError):
            stats.zscore(x, nan_policy="raise")
    # integer input: float64, as scipy
    xi = rng.integers(-5, 5, (20, 3))
    np.testing.assert_allclose(nbn.zscore(xi), stats.zscore(xi), rtol=1e-13, atol=1e-13)
    assert nbn.zscore(xi).dtype == np.float64
    assert nbn.zscore(xi > 0).dtype == np.float64
    # one value per slice with ddof=1: NaN, as scipy
    np.testing.assert_array_equal(np.isnan(nbn.zscore(np.ones((1, 3)), ddof=1)), True)


def test_against_scikit_learn(rng):
    pre = pytest.importorskip("sklearn.preprocessing")
    for dtype in DTYPES:
        X = _data(rng, (200, 6), dtype, mean=3.0)
        X[::7, 1] = np.nan
        X[:, 4] = -1.25  # constant feature: feature_range[0]
        X[:, 5] = np.nan  # all NaN: NaN
        for axis in (0, 1):
            for fr in ((0, 1), (-3, 0.5)):
                ours = nbn.minmax_scale(X, fr, axis=axis)
                theirs = pre.minmax_scale(X, fr, axis=axis)
                assert ours.dtype == theirs.dtype
                np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
                t = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(ours, theirs, equal_nan=True, rtol=t["rtol"],
                                           atol=t["atol"] * (fr[1] - fr[0]))
    X = _data(rng, (30, 4), np.float64)
    y = X.copy()
    nbn.minmax_scale(y, copy=False)
    np.testing.assert_allclose(y, pre.minmax_scale(X), rtol=1e-12, atol=1e-12)


def test_against_torch_forward(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for dtype in DTYPES:
        x = _data(rng, (5, 6, 7), dtype)
        x[1, 2] = 0.0  # a zero vector along dim 2: x / eps
        for p in (1, 2, 3.5, 0.7, np.inf):
            for dim in (1, -1, (0, 2), 0):
                ours = nbn.normalize(x, p, dim)
                theirs = F.normalize(torch.tensor(x), p, dim).numpy()
                t = TOL[dtype] if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)
                np.testing.assert_allclose(ours, theirs, **t)


# ---------------------------------------------------------------------------------------------
# backward: against torch's autograd and float64 finite differences

def _torch_zscore(torch, x, axes, ddof, omit):
    if not omit:
        m = x.mean(dim=axes, keepdim=True)
        s = x.var(dim=axes, correction=ddof, keepdim=True).sqrt()
        return (x - m) / s
    ok = ~torch.isnan(x)
    xs = torch.where(ok, x, torch.zeros_like(x))
    n = ok.sum(dim=axes, keepdim=True)
    m = xs.sum(dim=axes, keepdim=True) / n
    d = torch.where(ok, xs - m, torch.zeros_like(x))
    s = ((d * d).sum(dim=axes, keepdim=True) / (n - ddof)).sqrt()
    # NaN kept out of the graph (a NaN anywhere in it turns the gradients NaN through 0*NaN)
    return torch.where(ok, (xs - m) / s, x)


def _torch_minmax(torch, x, axes, fr, dtype):
    ok = ~torch.isnan(x)
    mn = torch.where(ok, x, torch.full_like(x, np.inf)).amin(dim=axes, keepdim=True)
    mx = torch.where(ok, x, torch.full_like(x, -np.inf)).amax(dim=axes, keepdim=True)
    rng_ = mx - mn
    rng_ = torch.where(rng_ < 10 * np.finfo(dtype).eps, torch.ones_like(rng_), rng_)
    xs = torch.where(ok, x, mn)
    return torch.where(ok, (xs - mn) / rng_ * (fr[1] - fr[0]) + fr[0], x)


def _torch_grad(torch, fn, x, dy):
    xt = torch.tensor(x, requires_grad=True)
    y = fn(xt)
    y.backward(torch.tensor(np.nan_to_num(dy)))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("shape,axis", [((9, 5), 0), ((5, 9), 1), ((4, 5, 6), (0, 2)),
                                        ((4, 5, 6), None), ((3, 4, 5), 1)])
def test_backward_matches_torch_autograd(rng, shape, axis):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 2 + 1
    dy = rng.standard_normal(shape)
    axes = tuple(range(x.ndim)) if axis is None else ((axis,) if np.isscalar(axis) else axis)
    for ddof in (0, 1):
        _, saved = nbn.zscore_forward(x, axis, ddof)
        _, g = _torch_grad(torch, lambda t: _torch_zscore(torch, t, axes, ddof, False), x, dy)
        np.testing.assert_allclose(nbn.zscore_backward(dy, saved), g, rtol=1e-10, atol=1e-12)
    # ties at the min and max: torch's amin/amax share the gradient evenly
    xt = np.round(x)
    _, saved = nbn.minmax_scale_forward(xt, (-1, 2), axis=axis)
    _, g = _torch_grad(torch, lambda t: _torch_minmax(torch, t, axes, (-1, 2), np.float64),
                       xt, dy)
    np.testing.assert_allclose(nbn.minmax_scale_backward(dy, saved), g, rtol=1e-10, atol=1e-12)
    for p in (1.0, 2.0, 3.0, 0.5, np.inf):
        xp_ = xt if p == np.inf else x  # ties in max |x| for inf
        _, saved = nbn.normalize_forward(xp_, p, axes)
        _, g = _torch_grad(torch, lambda t: torch.nn.functional.normalize(t, p, axes), xp_, dy)
        np.testing.assert_allclose(nbn.normalize_backward(dy, saved), g, rtol=1e-10,
                                   atol=1e-12, err_msg=f"p={p}")


def test_backward_with_nan_omitted_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((12, 5))
    x[2, 1] = x[7, 1] = x[5, 3] = np.nan
    dy = rng.standard_normal(x.shape)
    ok = ~np.isnan(x)
    _, saved = nbn.zscore_forward(x, 0, 1, "omit")
    dx = nbn.zscore_backward(dy, saved)
    xt = torch.tensor(x, requires_grad=True)
    y = _torch_zscore(torch, xt, (0,), 1, True)
    y.backward(torch.tensor(np.where(ok, dy, 0.0)))
    np.testing.assert_allclose(dx[ok], xt.grad.numpy()[ok], rtol=1e-10, atol=1e-12)
    assert np.isnan(dx[~ok]).all()
    _, saved = nbn.minmax_scale_forward(x, axis=0)
    dx = nbn.minmax_scale_backward(dy, saved)
    xt = torch.tensor(x, requires_grad=True)
    y = _torch_minmax(torch, xt, (0,), (0, 1), np.float64)
    y.backward(torch.tensor(np.where(ok, dy, 0.0)))
    np.testing.assert_allclose(dx[ok], xt.grad.numpy()[ok], rtol=1e-10, atol=1e-12)
    assert np.isnan(dx[~ok]).all()


def _fd(f, x, dy, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (np.sum(f(xp) * dy) - np.sum(f(xm) * dy)) / (2 * h)
    return g


@pytest.mark.parametrize("op", ["zscore", "minmax", "normalize2", "normalize1", "normalize3"])
def test_backward_finite_differences(rng, op):
    x = rng.standard_normal((4, 6)) + 0.5
    dy = rng.standard_normal(x.shape)
    if op == "zscore":
        fwd, bwd, f = (lambda a: nbn.zscore_forward(a, 1, 1), nbn.zscore_backward,
                       lambda a: nbn.zscore(a, 1, 1))
    elif op == "minmax":
        fwd, bwd, f = (lambda a: nbn.minmax_scale_forward(a, (0, 5), axis=0),
                       nbn.minmax_scale_backward, lambda a: nbn.minmax_scale(a, (0, 5), axis=0))
    else:
        p = float(op[-1])
        fwd, bwd, f = (lambda a: nbn.normalize_forward(a, p, (0, 1)), nbn.normalize_backward,
                       lambda a: nbn.normalize(a, p, (0, 1)))
    _, saved = fwd(x)
    np.testing.assert_allclose(bwd(dy, saved), _fd(f, x, dy), rtol=1e-6, atol=1e-7)


def test_float32_backward_close_to_float64(rng):
    x = (rng.standard_normal((50, 4)) + 3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for fwd, bwd in ((lambda a: nbn.zscore_forward(a), nbn.zscore_backward),
                     (lambda a: nbn.minmax_scale_forward(a), nbn.minmax_scale_backward),
                     (lambda a: nbn.normalize_forward(a, dim=0), nbn.normalize_backward)):
        d32 = bwd(dy, fwd(x)[1])
        d64 = bwd(dy.astype(np.float64), fwd(x.astype(np.float64))[1])
        assert d32.dtype == np.float32
        np.testing.assert_allclose(d32, d64, rtol=1e-5, atol=1e-5 * np.abs(d64).max())


# ---------------------------------------------------------------------------------------------
# robustness

@pytest.mark.parametrize("shape,axis", [((3000, 4), 0), ((4, 3000), 1), ((20, 4, 150), (0, 2))])
def test_float32_large_mean_keeps_its_variance(rng, shape, axis):
    x = (rng.standard_normal(shape) + 1e6).astype(np.float32)
    m = nbn.moments(x, axis)
    ref = np.var(x.astype(np.float64), axis=axis)
    np.testing.assert_allclose(m.var(), ref, rtol=1e-5)
    z = nbn.zscore(x, axis)
    np.testing.assert_allclose(z, oracle.zscore(x, axis), rtol=1e-4, atol=1e-4)


def test_huge_float32_stays_finite_and_right(rng):
    x = (rng.standard_normal((200, 3)) * 1e30).astype(np.float32)
    for axis in (0, 1):
        z = nbn.zscore(x, axis)
        assert np.isfinite(z).all()
        np.testing.assert_allclose(z, oracle.zscore(x, axis), rtol=1e-5, atol=1e-5)
        y = nbn.normalize(x, dim=axis)
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, oracle.normalize(x, 2, axis), rtol=1e-5, atol=1e-6)


def test_huge_and_tiny_float64_norms(rng):
    for scale in (1e200, 1e-200):
        x = rng.standard_normal((5, 40)) * scale
        y = nbn.normalize(x, dim=1, eps=0.0)  # (the default eps clamps norms of 1e-199)
        ref = (x / scale) / np.linalg.norm(x / scale, axis=1, keepdims=True)
        np.testing.assert_allclose(y, ref, rtol=1e-13)


def test_nan_propagates_only_to_its_slice(rng):
    x = rng.standard_normal((30, 5))
    x[4, 2] = np.nan
    for f in (lambda a: nbn.zscore(a), lambda a: nbn.normalize(a, dim=0)):
        y = f(x)
        assert np.isnan(y[:, 2]).all()
        assert np.isfinite(np.delete(y, 2, axis=1)).all()
    y = nbn.minmax_scale(x)  # NaN ignored in the statistics, kept in place
    assert np.isnan(y[4, 2]) and np.isfinite(np.delete(y.ravel(), 4 * 5 + 2)).all()


def test_out_argument(rng):
    for order in ("C", "F"):
        x = _data(rng, (30, 6), np.float32, order)
        for f in (lambda a, **k: nbn.zscore(a, 0, **k), lambda a, **k: nbn.minmax_scale(a, **k),
                  lambda a, **k: nbn.normalize(a, dim=0, **k)):
            expected = f(x)
            for out_order in ("C", "F"):
                out = np.empty(x.shape, x.dtype, order=out_order)
                assert f(x, out=out) is out
                np.testing.assert_array_equal(out, expected)
            y = x.copy(order=order)
            assert f(y, out=y) is y  # in place
            np.testing.assert_array_equal(y, expected)


# ---------------------------------------------------------------------------------------------
# bad input: named, before any work, nothing written

BAD = [
    (lambda x, o: nbn.zscore(x, axis=2), ValueError, "axis"),
    (lambda x, o: nbn.zscore(x, axis=(0, -2)), ValueError, "axis"),
    (lambda x, o: nbn.zscore(x, axis=1.0), TypeError, "axis"),
    (lambda x, o: nbn.zscore(x, nan_policy="ignore"), ValueError, "nan_policy"),
    (lambda x, o: nbn.zscore(x, ddof=-1), ValueError, "ddof"),
    (lambda x, o: nbn.zscore(x, ddof=1.5), TypeError, "ddof"),
    (lambda x, o: nbn.zscore(x, out=o[:, :2]), ValueError, "out"),
    (lambda x, o: nbn.zscore(x, out=o.astype(np.float32)), TypeError, "out"),
    (lambda x, o: nbn.zscore(x, out=o[1:]), ValueError, "out"),
    (lambda x, o: nbn.zscore(x.astype(np.complex128)), TypeError, "complex"),
    (lambda x, o: nbn.zscore("abc"), TypeError, "a"),
    (lambda x, o: nbn.minmax_scale(x, (1, 1)), ValueError, "feature range"),
    (lambda x, o: nbn.minmax_scale(x, (2, 1)), ValueError, "feature range"),
    (lambda x, o: nbn.minmax_scale(x, 5), TypeError, "feature_range"),
    (lambda x, o: nbn.normalize(x, p=0), ValueError, "p"),
    (lambda x, o: nbn.normalize(x, p=-2), ValueError, "p"),
    (lambda x, o: nbn.normalize(x, p=np.nan), ValueError, "p"),
    (lambda x, o: nbn.normalize(x, eps=-1e-3), ValueError, "eps"),
    (lambda x, o: nbn.normalize(x, dim=3), ValueError, "dim"),
    (lambda x, o: nbn.moments(x, nan_policy="x"), ValueError, "nan_policy"),
    (lambda x, o: nbn.zscore_backward(x, nbn.minmax_scale_forward(x)[1]), TypeError, "saved"),
    (lambda x, o: nbn.zscore_backward(x[:2], nbn.zscore_forward(x)[1]), ValueError, "dy"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_is_named_and_writes_nothing(rng, case):
    fn, exc, word = BAD[case]
    x = rng.standard_normal((6, 4))
    out = np.full((6, 4), 7.0)
    before = x.copy()
    with pytest.raises(exc, match=word):
        fn(x, out)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(out, 7.0)


def test_nan_with_raise_is_refused_before_any_work(rng):
    x = rng.standard_normal((6, 4))
    x[2, 2] = np.nan
    out = np.full(x.shape, 7.0)
    with pytest.raises(ValueError, match="nan"):
        nbn.zscore(x, nan_policy="raise", out=out)
    np.testing.assert_array_equal(out, 7.0)
    with pytest.raises(ValueError, match="nan"):
        nbn.moments(x, nan_policy="raise")


def test_minmax_scale_refuses_infinity_before_writing():
    """+inf or -inf has no finite range: a ValueError naming X (scikit-learn refuses it too),
    with out= left untouched."""
    x = np.array([[1.0, 4.0], [np.inf, 5.0], [3.0, -np.inf]])
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="X contains infinity"):
        nbn.minmax_scale(x, out=out)
    np.testing.assert_array_equal(out, 7.0)
    with pytest.raises(ValueError, match="X contains infinity"):
        nbn.minmax_scale(np.array([[1.0], [-np.inf]]), axis=0)
