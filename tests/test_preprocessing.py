"""StandardScaler, MinMaxScaler, Normalizer against scikit-learn's: fitted attributes,
transforms, streams, weights, NaN, constant features, dtypes; the estimator protocol
(Pipeline, clone, GridSearchCV, check_estimator); and the scalers without scikit-learn."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numbanorm as nbn

sk = pytest.importorskip("sklearn")
from sklearn import preprocessing as skp  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

DTYPES = [np.float32, np.float64]


def _X(rng, dtype, n=300, nan=True):
    X = rng.standard_normal((n, 6)) * np.array([1, 3, 1e-3, 7, 1, 2]) + np.array(
        [0, 5, 1e3, -2, 0, 1])
    X[:, 4] = 2.5  # constant
    if nan:
        X[::9, 1] = np.nan
        X[3::11, 5] = np.nan
    return X.astype(dtype)


def _same_attrs(ours, theirs, names, dtype):
    for name in names:
        a, b = getattr(ours, name), getattr(theirs, name)
        if b is None:
            assert a is None, name
            continue
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.dtype, b.dtype)
        rtol = 1e-12 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.nanmax(np.abs(b)),
                                   equal_nan=True, err_msg=name)


def _same_output(a, b, dtype, rounding=0.0):
    """a and b equal to rounding: 1e-12 (float64) or 2e-6 (float32) of the output's scale,
    plus `rounding` (per column), the error of scikit-learn's own float32 arithmetic where it
    is larger: it subtracts float32(mean_), whose rounding is |mean_|*6e-8, from X."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    bound = tol * max(1.0, np.nanmax(np.abs(b))) + rounding + tol * np.abs(b)
    ok = ~np.isnan(b)
    bad = np.abs(a - b)[ok] > np.broadcast_to(bound, b.shape)[ok]
    assert not bad.any(), (np.abs(a - b)[ok][bad][:5], np.broadcast_to(bound, b.shape)[ok][bad][:5])


def _sk_rounding(scaler, dtype):
    """Per feature, the rounding of X - mean_ in output units: scikit-learn subtracts mean_
    rounded to X's dtype, and two correct float64 means may differ in their last bit (which
    matters where |mean| >> std: the feature of mean 1e3 and std 1e-3 here); a few ulps, since
    the means of a stream of batches are merged differently."""
    if getattr(scaler, "mean_", None) is None or not scaler.with_mean:
        return 0.0
    scale = scaler.scale_ if scaler.with_std else 1.0
    return 8 * np.finfo(dtype).eps * np.abs(scaler.mean_) / scale


STANDARD_ATTRS = ["mean_", "var_", "scale_", "n_samples_seen_", "n_features_in_"]
MINMAX_ATTRS = ["data_min_", "data_max_", "data_range_", "scale_", "min_", "n_samples_seen_",
                "n_features_in_"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [{}, {"with_mean": False}, {"with_std": False},
                                    {"with_mean": False, "with_std": False}])
def test_standard_scaler(rng, dtype, kwargs):
    X = _X(rng, dtype)
    ours, theirs = nbn.StandardScaler(**kwargs), skp.StandardScaler(**kwargs)
    y = ours.fit_transform(X)
    _same_output(y, theirs.fit_transform(X), dtype, _sk_rounding(theirs, dtype))
    _same_attrs(ours, theirs, STANDARD_ATTRS, dtype)
    if theirs.mean_ is not None:  # and against float64 arithmetic on the same data
        mean = ours.mean_ if ours.with_mean else 0.0
        scale = ours.scale_ if ours.with_std else 1.0
        ref = (X.astype(np.float64) - mean) / scale
        np.testing.assert_allclose(y, ref, rtol=2e-6 if dtype == np.float32 else 1e-12,
                                   atol=2e-6 if dtype == np.float32 else 1e-12)
    Y = _X(rng, dtype, 50)
    _same_output(ours.transform(Y), theirs.transform(Y), dtype, _sk_rounding(theirs, dtype))
    _same_output(ours.inverse_transform(Y), theirs.inverse_transform(Y), dtype,
                 0.0 if dtype == np.float64 else 2e-6 * np.abs(theirs.mean_ if
                                                               theirs.mean_ is not None else 0))
    # a stream of batches, and weights
    ours, theirs = nbn.StandardScaler(**kwargs), skp.StandardScaler(**kwargs)
    for batch in np.array_split(X, 7):
        ours.partial_fit(batch)
        theirs.partial_fit(batch)
    _same_attrs(ours, theirs, STANDARD_ATTRS, dtype)
    w = rng.random(len(X)) * 3
    ours = nbn.StandardScaler(**kwargs).fit(X, sample_weight=w)
    theirs = skp.StandardScaler(**kwargs).fit(X, sample_weight=w)
    _same_attrs(ours, theirs, STANDARD_ATTRS, dtype)
    _same_output(ours.transform(X), theirs.transform(X), dtype, _sk_rounding(theirs, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [{}, {"feature_range": (-2, 3)}, {"clip": True}])
def test_minmax_scaler(rng, dtype, kwargs):
    X = _X(rng, dtype)
    ours, theirs = nbn.MinMaxScaler(**kwargs), skp.MinMaxScaler(**kwargs)
    y = ours.fit_transform(X)
    # scikit-learn's X*scale_ + min_ rounds |X*scale_|, large where |X| >> the range
    eps = np.finfo(dtype).eps
    rounding = 4 * eps * np.abs(X.astype(np.float64)).max(0, initial=0, where=~np.isnan(X)) \
        * theirs.fit(X).scale_
    _same_output(y, theirs.transform(X), dtype, rounding)
    _same_attrs(ours, theirs, MINMAX_ATTRS, dtype)
    Y = _X(rng, dtype, 50) * 1.5  # beyond the fitted range: clip matters
    _same_output(ours.transform(Y), theirs.transform(Y), dtype, 1.5 * rounding)
    _same_output(ours.inverse_transform(Y), theirs.inverse_transform(Y), dtype,
                 4 * eps * np.abs(theirs.data_max_) + 4 * eps * np.abs(theirs.data_min_))
    ours, theirs = nbn.MinMaxScaler(**kwargs), skp.MinMaxScaler(**kwargs)
    for batch in np.array_split(X, 5):
        ours.partial_fit(batch)
        theirs.partial_fit(batch)
    _same_attrs(ours, theirs, MINMAX_ATTRS, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_normalizer(rng, dtype, norm):
    X = _X(rng, dtype, nan=False)
    X[7] = 0.0  # a zero row stays zero
    ours, theirs = nbn.Normalizer(norm), skp.Normalizer(norm)
    _same_output(ours.fit_transform(X), theirs.fit_transform(X), dtype)
    Xn = X.copy()
    Xn[2, 2] = np.nan
    for est in (ours, theirs):
        with pytest.raises(ValueError, match="NaN"):
            est.transform(Xn)


def test_float32_large_offset_minmax_is_exact(rng):
    """scikit-learn's X*scale_ + min_ loses the low digits of float32 data far from 0 against
    its range; numbanorm's (X - data_min_)*scale_ + lo does not."""
    X = (rng.random((1000, 2)) * 10 + 1e4).astype(np.float32)
    ours = nbn.MinMaxScaler().fit_transform(X)
    ref = ((X.astype(np.float64) - X.min(0)) / (X.max(0) - X.min(0)).astype(np.float64))
    np.testing.assert_allclose(ours, ref, atol=3e-7)
    assert np.abs(skp.MinMaxScaler().fit_transform(X) - ref).max() > 1e-5


def test_copy_false_transforms_in_place(rng):
    X = _X(rng, np.float64)
    s = nbn.StandardScaler(copy=False).fit(X)
    Y = X.copy()
    out = s.transform(Y)
    assert out is Y
    theirs = skp.StandardScaler().fit(X)
    _same_output(Y, theirs.transform(X), np.float64, _sk_rounding(theirs, np.float64))


def test_protocol_pipeline_clone_grid_search(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    X = rng.standard_normal((200, 4)) * 5 + 3
    y = (X[:, 0] + X[:, 1] > 6).astype(int)
    for scaler in (nbn.StandardScaler(), nbn.MinMaxScaler(), nbn.Normalizer()):
        c = clone(scaler)
        assert c.get_params() == scaler.get_params() and c is not scaler
        pipe = make_pipeline(scaler, LogisticRegression())
        ref = make_pipeline(getattr(skp, type(scaler).__name__)(), LogisticRegression())
        np.testing.assert_allclose(pipe.fit(X, y).predict_proba(X),
                                   ref.fit(X, y).predict_proba(X), rtol=1e-6, atol=1e-8)
    grid = {"standardscaler__with_mean": [True, False], "logisticregression__C": [0.1, 1.0]}
    search = GridSearchCV(make_pipeline(nbn.StandardScaler(), LogisticRegression()), grid, cv=3)
    search.fit(X, y)
    assert set(search.best_params_) == set(grid)
    s = nbn.MinMaxScaler().set_params(feature_range=(-1, 1))
    assert s.get_params()["feature_range"] == (-1, 1)
    assert repr(nbn.StandardScaler(with_mean=False)) == "StandardScaler(with_mean=False)"


def test_errors(rng):
    X = _X(rng, np.float64, nan=False)
    for est in (nbn.StandardScaler(), nbn.MinMaxScaler(), nbn.Normalizer()):
        if isinstance(est, nbn.Normalizer):  # stateless, as scikit-learn's: no fit needed
            np.testing.assert_allclose(est.transform(X), skp.Normalizer().transform(X),
                                       rtol=1e-12)
        else:
            with pytest.raises(NotFittedError):
                est.transform(X)
        est.fit(X)
        with pytest.raises(ValueError, match="features"):
            est.transform(X[:, :3])
    with pytest.raises(ValueError, match="feature range"):
        nbn.MinMaxScaler(feature_range=(2, 1)).fit(X)
    with pytest.raises(ValueError, match="norm"):
        nbn.Normalizer(norm="l3").fit(X).transform(X)
    with pytest.raises(ValueError, match="2D"):
        nbn.StandardScaler().fit(X[:, 0])
    before = X.copy()
    nbn.StandardScaler().fit_transform(X)
    np.testing.assert_array_equal(X, before, strict=True)


@parametrize_with_checks([nbn.StandardScaler(), nbn.StandardScaler(with_mean=False),
                          nbn.MinMaxScaler(),
                          nbn.MaxAbsScaler(), nbn.Normalizer()])
def test_check_estimator(estimator, check):
    check(estimator)


def test_scalers_without_scikit_learn():
    """With scikit-learn absent the scalers keep their methods and numbers, and importing
    numbanorm never imports it."""
    code = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None  # import sklearn raises ImportError
        import numpy as np
        import numbanorm as nbn
        assert "sklearn" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        rng = np.random.default_rng(0)
        X = rng.standard_normal((100, 3)) * 4 + 1
        X[5, 1] = np.nan
        s = nbn.StandardScaler().fit(X)
        m = np.nanmean(X, axis=0)
        np.testing.assert_allclose(s.mean_, m, rtol=1e-13)
        np.testing.assert_allclose(s.transform(X), (X - m) / np.nanstd(X, axis=0),
                                   rtol=1e-12, atol=1e-12)
        for b in np.array_split(X, 4):
            s.partial_fit(b)
        assert s.get_params() == {"copy": True, "with_mean": True, "with_std": True}
        y = nbn.MinMaxScaler((-1, 1)).fit_transform(X)
        assert np.nanmin(y) == -1 and abs(np.nanmax(y) - 1) < 1e-15
        np.testing.assert_allclose(np.abs(nbn.Normalizer("l1").fit_transform(np.nan_to_num(X))
                                          ).sum(1), 1.0)
        try:
            nbn.StandardScaler().transform(X)
        except ValueError as e:
            assert "not fitted" in str(e)
        else:
            raise AssertionError("transform before fit")
        import scipy.sparse as sp  # sparse input needs no scikit-learn either
        D = np.where(np.abs(np.nan_to_num(X)) > 3, np.nan_to_num(X), 0.0)
        S = sp.csc_array(D)
        y = nbn.MaxAbsScaler().fit_transform(S)
        assert y.format == "csc"
        np.testing.assert_allclose(y.toarray(), D / np.abs(D).max(axis=0), rtol=1e-15)
        s = nbn.StandardScaler(with_mean=False).fit(S)
        np.testing.assert_allclose(s.var_, D.var(axis=0), rtol=1e-13)
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
    code = "import sys, numbanorm; assert 'sklearn' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True).stdout.strip() == "ok"
