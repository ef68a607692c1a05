"""numbanorm on Dask arrays: the same numbers as the NumPy path for any chunking (ragged,
single-element chunks), lazy results with the input's chunks, errors when the graph is built,
the running-buffer rule, the scalers, the thread rule, and a real distributed.LocalCluster with
worker processes."""
import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._device import is_dask_array

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

TOL = {np.float64: dict(rtol=1e-13, atol=1e-13), np.float32: dict(rtol=2e-6, atol=2e-6)}
# (rows of the data used, chunks): regular, one chunk along an axis, ragged, single-element
# chunks (on fewer rows: a thousand-task graph per call takes seconds)
CHUNKINGS = [((1000, 12), (100, 5)), ((1000, 12), (333, 12)), ((24, 5), (1, 1)),
             ((1000, 12), ((1, 499, 500), (3, 9))), ((1000, 12), ((7, 993), (1, 1, 10)))]


def _close(lazy, ref, dtype):
    assert is_dask_array(lazy)
    got = lazy.compute()
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, equal_nan=True, **TOL[dtype])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1000, 12)) * 3 + 1
    x[::13, 2] = np.nan
    x[:, 5] = 0.25  # a constant feature
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size,chunks", CHUNKINGS)
def test_data_functions_match_numpy_for_any_chunking(data, size, chunks, dtype):
    x = data[:size[0], :size[1]].astype(dtype)
    d = da.from_array(x, chunks=chunks)
    for axis in (0, 1, None, (0, 1), -1):
        for policy in ("propagate", "omit"):
            z = nbn.zscore(d, axis, ddof=1, nan_policy=policy)
            assert z.chunks == d.chunks  # lazy, chunked as the input
            _close(z, nbn.zscore(x, axis, ddof=1, nan_policy=policy), dtype)
        _close(nbn.minmax_scale(d, (-1, 2), axis=axis),
               nbn.minmax_scale(x, (-1, 2), axis=axis), dtype)
        xx = np.nan_to_num(x)
        dim = axis if axis is not None else (0, 1)
        _close(nbn.normalize(da.from_array(xx, chunks=chunks), 3.0, dim),
               nbn.normalize(xx, 3.0, dim), dtype)
        m = nbn.moments(d, axis, "omit")
        assert m.lazy
        got, ref = m.compute(), nbn.moments(x, axis, "omit")
        for f in ("count", "mean", "m2", "min", "max"):
            np.testing.assert_allclose(getattr(got, f), getattr(ref, f), rtol=1e-13,
                                       atol=1e-13 * np.nanmax(np.abs(getattr(ref, f))),
                                       equal_nan=True, err_msg=f)


def test_moments_of_a_dask_array_merge_and_read_once(data):
    d = da.from_array(data, chunks=(100, 6))
    m = nbn.moments(d[:500], 0, "omit") + nbn.moments(d[500:], 0, "omit")
    assert m.lazy
    ref = nbn.moments(data, 0, "omit")
    np.testing.assert_allclose(m.compute().var(1), ref.var(1), rtol=1e-13, equal_nan=True)
    # one reduction feeds all five fields: the data are read by one task per chunk
    reads = []

    def source(block, block_info=None):
        reads.append(block_info[0]["chunk-location"])
        return block
    counted = da.from_array(data, chunks=(100, 6)).map_blocks(source, dtype=data.dtype)
    nbn.moments(counted, 0).compute()
    assert len(reads) == len(set(reads)) == 20


@pytest.mark.parametrize("shape,chunks", [((6, 8, 5, 7), (2, 8, 5, 7)),
                                          ((6, 8, 5, 7), (3, 4, 2, 3)),
                                          ((6, 8, 5, 7), (1, 8, 5, 7)),
                                          ((6, 8, 5, 7), (6, 3, 5, 7)),
                                          ((2, 8, 2, 7), (1, 1, 1, 1))])
def test_deep_learning_ops_match_numpy(shape, chunks):
    """Groups inside one chunk run block by block; groups across chunks take the moments
    reduction: both give the NumPy path's numbers."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    d = da.from_array(x, chunks=chunks)
    w7, b7 = rng.standard_normal(7), rng.standard_normal(7)
    w8, b8 = rng.standard_normal(8), rng.standard_normal(8)
    rm, rv = rng.standard_normal(8), rng.random(8) + 0.5
    cases = [
        (nbn.layer_norm(d, 7, w7, b7), nbn.layer_norm(x, 7, w7, b7)),
        (nbn.layer_norm(d, shape[2:]), nbn.layer_norm(x, shape[2:])),
        (nbn.rms_norm(d, 7, w7), nbn.rms_norm(x, 7, w7)),
        (nbn.group_norm(d, 4, w8, b8), nbn.group_norm(x, 4, w8, b8)),
        (nbn.group_norm(d, 1), nbn.group_norm(x, 1)),
        (nbn.instance_norm(d, weight=w8, bias=b8), nbn.instance_norm(x, weight=w8, bias=b8)),
        (nbn.instance_norm(d, rm, rv, w8, b8, False), nbn.instance_norm(x, rm, rv, w8, b8, False)),
        (nbn.batch_norm(d, None, None, w8, b8, True), nbn.batch_norm(x, None, None, w8, b8, True)),
        (nbn.batch_norm(d, rm, rv, w8, b8, False), nbn.batch_norm(x, rm, rv, w8, b8, False)),
    ]
    for lazy, ref in cases:
        assert lazy.chunks == d.chunks
        _close(lazy, ref, np.float64)
    x2 = rng.standard_normal((40, 8)).astype(np.float32)
    d2 = da.from_array(x2, chunks=(7, 3))
    _close(nbn.batch_norm(d2, None, None, None, None, True), nbn.batch_norm(x2, training=True),
           np.float32)
    _close(nbn.group_norm(d2, 2), nbn.group_norm(x2, 2), np.float32)


def test_running_buffers_rule_and_layers():
    """Training with running buffers is refused when the graph is built (the in-place update
    cannot happen lazily); eval reads them; layers run inference on Dask arrays."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    d = da.from_array(x, chunks=(4, 4, 3, 3))
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    for fn in (lambda: nbn.batch_norm(d, rm, rv, training=True),
               lambda: nbn.instance_norm(d, rm, rv, use_input_stats=True)):
        with pytest.raises(ValueError, match="running_mean.*in place.*moments"):
            fn()
    np.testing.assert_array_equal(rm, 0.0)
    bn = nbn.BatchNorm2d(4)
    bn.running_mean[:] = rng.standard_normal(4)
    bn.eval()
    ref = bn(x)
    np.testing.assert_allclose(bn(d).compute(), ref, rtol=2e-6, atol=2e-6)
    with pytest.raises(RuntimeError, match="Dask"):
        bn.backward(x)  # the forward just before ran on a Dask array: no saved record
    bn.train()
    with pytest.raises(ValueError, match="in place"):
        bn(d)
    for layer, xs in ((nbn.LayerNorm(3), x), (nbn.GroupNorm(2, 4), x), (nbn.RMSNorm(3), x),
                      (nbn.InstanceNorm2d(4, affine=True), x)):
        _close(layer(da.from_array(xs, chunks=(3, 2, 3, 3))), layer(xs), np.float32)
    y, saved = nbn.layer_norm_forward(d, 3)
    assert saved is None and is_dask_array(y)


def test_errors_when_the_graph_is_built_not_at_compute():
    """Bad axes, shapes, dtypes and arguments raise at once; nothing is computed."""
    computed = []

    def never(block):
        computed.append(1)
        return block
    d = da.from_array(np.ones((20, 4)), chunks=(5, 2)).map_blocks(
        never, dtype=np.float64, meta=np.empty((0, 0)))
    for fn, exc in ((lambda: nbn.zscore(d, axis=2), ValueError),
                    (lambda: nbn.zscore(d, nan_policy="skip"), ValueError),
                    (lambda: nbn.zscore(d, ddof=-1), ValueError),
                    (lambda: nbn.zscore(d.astype(np.complex64)), TypeError),
                    (lambda: nbn.minmax_scale(d, (1, 0)), ValueError),
                    (lambda: nbn.normalize(d, p=0), ValueError),
                    (lambda: nbn.moments(d, (0, 0)), ValueError),
                    (lambda: nbn.layer_norm(d, 3), ValueError),
                    (lambda: nbn.group_norm(d, 3), ValueError),
                    (lambda: nbn.batch_norm(d, np.zeros(3), np.ones(3)), ValueError),
                    (lambda: nbn.zscore(d, out=np.empty((20, 4))), ValueError),
                    (lambda: nbn.StandardScaler().fit(np.ones((5, 4))).transform(d[:, :3]),
                     ValueError)):
        with pytest.raises(exc):
            fn()
    for lazy in (nbn.zscore(d), nbn.minmax_scale(d), nbn.normalize(d), nbn.layer_norm(d, 4),
                 nbn.batch_norm(d, training=True), nbn.moments(d).mean,
                 nbn.StandardScaler().fit(np.ones((5, 4))).transform(d)):
        assert is_dask_array(lazy)
    assert not computed
    # NaN with 'raise' can only show when the data are read
    n = da.from_array(np.array([[1.0, np.nan], [2.0, 3.0]]), chunks=1)
    lazy = nbn.zscore(n, nan_policy="raise")
    with pytest.raises(ValueError, match="nan"):
        lazy.compute()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scalers_on_dask(data, dtype):
    x = data.astype(dtype)
    d = da.from_array(x, chunks=(128, 5))
    for cls in (nbn.StandardScaler, nbn.MinMaxScaler, nbn.MaxAbsScaler):
        ours, ref = cls().fit(d), cls().fit(x)
        for attr in ("mean_", "var_", "scale_", "data_min_", "data_max_", "min_", "max_abs_",
                     "n_samples_seen_"):
            if hasattr(ref, attr):
                np.testing.assert_allclose(getattr(ours, attr), getattr(ref, attr),
                                           rtol=1e-12 if dtype == np.float64 else 1e-6,
                                           equal_nan=True, err_msg=attr)
        y = ours.transform(d)
        assert is_dask_array(y) and y.chunks == d.chunks
        _close(y, ref.transform(x), dtype)
        _close(ours.inverse_transform(y), ref.inverse_transform(ref.transform(x)), dtype)
        s = cls()
        for start in range(0, 1000, 250):
            s.partial_fit(d[start:start + 250])
        _close(s.transform(d), ref.transform(x), dtype)
    xx = np.nan_to_num(x)
    _close(nbn.Normalizer("l1").fit(da.from_array(xx, chunks=(100, 5))).transform(
        da.from_array(xx, chunks=(100, 5))), nbn.Normalizer("l1").fit_transform(xx), dtype)


def test_task_threads_rule():
    """Inside a Dask task numbanorm's kernels use TASK_THREADS Numba threads (1 by
    default), and the caller's own setting is back afterwards."""
    import numba
    from numbanorm import dask as nd
    from numbanorm.dask import _host
    seen = []

    def probe(block):
        with _host._task_threads():
            seen.append(numba.get_num_threads())
        return block
    d = da.from_array(np.ones((8, 2)), chunks=(2, 2)).map_blocks(probe, dtype=np.float64)
    d.compute(scheduler="threads")
    assert seen and set(seen) == {nd.TASK_THREADS} == {1}
    before = numba.get_num_threads()
    nd.set_task_threads(0)
    try:
        seen.clear()
        d.compute(scheduler="sync")
        assert set(seen) == {numba.config.NUMBA_NUM_THREADS}
    finally:
        nd.set_task_threads(1)
    assert numba.get_num_threads() == before


def test_distributed_local_cluster_with_worker_processes(data):
    """A real cluster: worker processes, so Moments records, kernels' inputs and the graph
    are pickled and sent for real; the numbers are the NumPy path's."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        d = da.from_array(data, chunks=(150, 7))
        z, m, ln, s = client.compute([nbn.zscore(d, 0, nan_policy="omit"),
                                      nbn.moments(d, 1, "omit").m2,
                                      nbn.layer_norm(np.nan_to_num(d), 12),
                                      nbn.StandardScaler().fit(d).transform(d)], sync=True)
        np.testing.assert_allclose(z, nbn.zscore(data, 0, nan_policy="omit"), rtol=1e-13,
                                   atol=1e-13, equal_nan=True)
        np.testing.assert_allclose(m, nbn.moments(data, 1, "omit").m2, rtol=1e-13)
        np.testing.assert_allclose(ln, nbn.layer_norm(np.nan_to_num(data), 12), rtol=1e-13,
                                   atol=1e-13)
        np.testing.assert_allclose(s, nbn.StandardScaler().fit_transform(data), rtol=1e-12,
                                   atol=1e-12, equal_nan=True)
        import pickle
        mom = nbn.moments(data, 0)
        back = client.submit(lambda m: m + m, mom).result()
        np.testing.assert_allclose(back.count, 2 * mom.count)
        assert pickle.loads(pickle.dumps(back)).shape == mom.shape


def test_composed_lazy_ops(data):
    """Transforms of transforms (each reading its input twice through bound clones) and a
    scaler on a lazy result give the NumPy path's numbers."""
    x = np.nan_to_num(data)
    d = da.from_array(x, chunks=(128, 5))
    for f in (lambda a: nbn.zscore(nbn.zscore(a, 0), 1),
              lambda a: nbn.minmax_scale(nbn.normalize(a, dim=0)),
              lambda a: nbn.layer_norm(nbn.zscore(a, 0), 12),
              lambda a: nbn.batch_norm(nbn.zscore(a, 1), training=True),
              lambda a: nbn.StandardScaler().fit(x).inverse_transform(
                  nbn.StandardScaler().fit(x).transform(a))):
        _close(f(d), f(x), np.float64)


def test_zscore_constant_column_is_silent_on_dask():
    """A constant column's z-scores are NaN on Dask as on NumPy, without a RuntimeWarning from
    inside the graph (issue 33)."""
    import warnings
    x = np.ones((6, 3))
    x[:, 1] = np.arange(6)
    d = da.from_array(x, chunks=(3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = nbn.zscore(d).compute()
    np.testing.assert_array_equal(got, nbn.zscore(x))
