"""moments and Moments: against NumPy, exact merging in any order, streams, pickling,
conversions, bad input."""
import pickle

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm import Moments


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((50, 7), 0), ((7, 50), 1), ((5, 6, 7), (0, 2)),
                                        ((5, 6, 7), None), ((4, 5, 6), 1), ((3, 1200), -1),
                                        ((1500, 3), 0)])
def test_moments_match_numpy(rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    x.reshape(-1)[::11] = np.nan
    xf = x.astype(np.float64)
    m = nbn.moments(x, axis, "omit")
    n = np.sum(~np.isnan(xf), axis=axis)
    np.testing.assert_array_equal(m.count, n)
    np.testing.assert_allclose(m.mean, np.nanmean(xf, axis=axis), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(m.var(), np.nanvar(xf, axis=axis), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.std(1), np.nanstd(xf, axis=axis, ddof=1), rtol=1e-12)
    np.testing.assert_array_equal(m.min, np.nanmin(xf, axis=axis))
    np.testing.assert_array_equal(m.max, np.nanmax(xf, axis=axis))
    p = nbn.moments(x, axis)  # propagate: NaN where a NaN entered
    np.testing.assert_array_equal(np.isnan(p.mean), np.isnan(np.mean(xf, axis=axis)))
    np.testing.assert_array_equal(np.isnan(p.min), np.isnan(np.min(xf, axis=axis)))
    np.testing.assert_array_equal(p.count, np.full(p.shape, xf.size // max(p.count.size, 1)))
    assert m.shape == np.mean(xf, axis=axis).shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 37), (3, 37), (9, 37), (4099, 37), (2, 140000),
                                   (1, 270000), (7, 20000)])
def test_column_range_and_nan_counts(rng, shape, dtype):
    """min, max and counts per column (the column kernels' range pass, four rows a loop, and
    chunks past the last row where a few rows are cut into more chunks) against NumPy, with
    NaN, +-inf, -0.0 and an all-NaN column."""
    x = rng.standard_normal(shape) * 10
    for value, share in ((np.nan, 0.1), (np.inf, 0.02), (-np.inf, 0.02), (-0.0, 0.05)):
        x[rng.random(x.shape) < share] = value
    x[:, 5] = np.nan
    x = x.astype(dtype)
    m = nbn.moments(x, 0, nan_policy="omit")
    xf = x.astype(np.float64)
    valid = ~np.isnan(xf)
    np.testing.assert_array_equal(m.count, valid.sum(0))
    lo = np.where(valid, xf, np.inf).min(0)
    hi = np.where(valid, xf, -np.inf).max(0)
    np.testing.assert_array_equal(m.min[valid.any(0)], lo[valid.any(0)])
    np.testing.assert_array_equal(m.max[valid.any(0)], hi[valid.any(0)])
    y = nbn.minmax_scale(np.where(np.isinf(x), 0, x).astype(dtype))  # (infinity is refused)
    assert np.isnan(y[:, 5]).all() and np.isnan(y).sum() == np.isnan(x).sum()


def test_constant_and_empty_positions(rng):
    x = rng.standard_normal((40, 3))
    x[:, 1] = 0.1
    x[:, 2] = np.nan
    m = nbn.moments(x, 0, "omit")
    assert m.mean[1] == 0.1 and m.var()[1] < 1e-30
    assert m.count[2] == 0 and np.isnan(m.mean[2]) and np.isnan(m.var()[2])
    assert m.min[2] == np.inf and m.max[2] == -np.inf


@pytest.mark.parametrize("order", ["sequential", "reversed", "shuffled", "tree"])
def test_thousand_chunks_merge_to_the_one_shot_statistics(rng, order):
    """1000 chunks, merged in any order, equal the statistics of the whole within 1e-14.
    (Chan's merge of chunk means carries their float64 rounding into every delta: where the
    mean is ~1e7 standard deviations from 0 that costs ~1e-11 of M2, for any implementation;
    one-shot statistics keep 1e-15 there, see test_large_mean_small_spread_float64.)"""
    x = rng.standard_normal((20000, 4)) * np.array([1.0, 1e-3, 1e3, 5.0]) + np.array(
        [0.0, 1e-2, -7e3, 3.0])
    whole = nbn.moments(x, 0)
    parts = [nbn.moments(c, 0) for c in np.array_split(x, 1000)]
    if order == "reversed":
        parts = parts[::-1]
    elif order == "shuffled":
        parts = [parts[i] for i in rng.permutation(len(parts))]
    if order == "tree":
        while len(parts) > 1:
            parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i]
                     for i in range(0, len(parts), 2)]
        merged = parts[0]
    else:
        merged = Moments.empty((4,))
        for p in parts:
            merged = merged.merge(p)
    np.testing.assert_array_equal(merged.count, whole.count)
    # the mean relative to its scale (a mean near 0 has no relative precision of its own)
    scale = np.abs(whole.mean) + np.sqrt(whole.var())
    assert np.all(np.abs(merged.mean - whole.mean) <= 1e-14 * scale), merged.mean - whole.mean
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-14)
    np.testing.assert_array_equal(merged.min, whole.min)
    np.testing.assert_array_equal(merged.max, whole.max)


def test_update_streams_chunks(rng):
    x = rng.standard_normal((1000, 3, 4))
    x[5, 1, 2] = np.nan
    m = Moments.empty((3, 4), axis=0, nan_policy="omit")
    for c in np.array_split(x, 37):
        assert m.update(c) is m
    whole = nbn.moments(x, 0, "omit")
    for a, b in zip(m.to_arrays(), whole.to_arrays()):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    with pytest.raises(ValueError, match="shape"):
        m.update(rng.standard_normal((10, 3)))


def test_pickle_and_arrays_round_trip(rng):
    m = nbn.moments(rng.standard_normal((30, 5)), 0, "omit")
    for back in (pickle.loads(pickle.dumps(m)), Moments.from_arrays(*m.to_arrays()),
                 Moments.unstack(m.stack())):
        for a, b in zip(back.to_arrays(), m.to_arrays()):
            np.testing.assert_array_equal(a, b)
    assert pickle.loads(pickle.dumps(m)).nan_policy == "omit"
    assert m.stack().shape == (5, 5)


def test_merge_errors(rng):
    a = nbn.moments(rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="shape"):
        a.merge(nbn.moments(rng.standard_normal((5, 4))))
    with pytest.raises(TypeError, match="Moments"):
        a.merge(3)
    with pytest.raises(ValueError, match="shape"):
        Moments(np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="ddof"):
        a.var(-1)
    with pytest.raises(ValueError, match="5"):
        Moments.unstack(np.zeros((4, 3)))


def test_large_mean_small_spread_float64(rng):
    """float64 data with mean 1e4 and std 1e-3, rows and columns: M2 within 1e-14 of the exact
    value (blocks merged as offsets from one centre; centred on the rounded running mean they
    were 3e-11 off)."""
    import math
    x = rng.standard_normal((20000, 3)) * 1e-3 + 1e4
    exact = np.array([math.fsum((x[:, j] - math.fsum(x[:, j]) / len(x)) ** 2) for j in range(3)])
    np.testing.assert_allclose(nbn.moments(x, 0).m2, exact, rtol=1e-14)
    np.testing.assert_allclose(nbn.moments(np.ascontiguousarray(x.T), 1).m2, exact, rtol=1e-14)


@pytest.mark.parametrize("values", [[1.0, np.inf, 2.0], [1.0, -np.inf, 2.0], [np.inf, -np.inf],
                                    [np.inf, 1.0, np.nan]])
def test_infinity_gives_numpys_mean(values):
    """A position holding an infinity: NumPy's mean (inf, -inf, or NaN with both signs or a
    NaN) and NaN variance, where the running means would give inf - inf; also after a merge,
    on Dask, and with NaN omitted."""
    x = np.array(values)
    with np.errstate(invalid="ignore"):
        want_mean, want_omit = np.mean(x), np.nanmean(x)
    m = nbn.moments(x)
    np.testing.assert_array_equal(m.mean, want_mean)
    assert np.isnan(m.var())
    np.testing.assert_array_equal(nbn.moments(x, nan_policy="omit").mean, want_omit)
    merged = nbn.moments(np.array([5.0, 6.0])) + m
    np.testing.assert_array_equal(merged.mean, want_mean)
    da = pytest.importorskip("dask.array")
    lazy = nbn.moments(da.from_array(x, chunks=2)).compute()
    np.testing.assert_array_equal(lazy.mean, want_mean)
