"""Numerical robustness against float64 references: large means, constant groups, huge
magnitudes, NaN/inf confined to their own group, and thread-count independent results."""
import numba
import numpy as np
import pytest

import numbanorm as nbn
import oracle
from numbanorm.cpu import _host as cpu_host

DTYPES = [np.float32, np.float64]

# Each op as (forward, backward, oracle) on x of shape (8, 6, 40); forward and oracle take eps.
OPS = {
    "layer_norm": (lambda x, eps=1e-5: nbn.layer_norm_forward(x, 40, eps=eps),
                   nbn.layer_norm_backward,
                   lambda x, dy, eps=1e-5: oracle.layer_norm(x, 40, dy=dy, eps=eps)),
    "group_norm": (lambda x, eps=1e-5: nbn.group_norm_forward(x, 3, eps=eps),
                   nbn.group_norm_backward,
                   lambda x, dy, eps=1e-5: oracle.group_norm(x, 3, dy=dy, eps=eps)),
    "instance_norm": (lambda x, eps=1e-5: nbn.instance_norm_forward(x, eps=eps),
                      nbn.instance_norm_backward,
                      lambda x, dy, eps=1e-5: oracle.instance_norm(x, dy=dy, eps=eps)),
    "batch_norm": (lambda x, eps=1e-5: nbn.batch_norm_forward(x, training=True, eps=eps),
                   nbn.batch_norm_backward,
                   lambda x, dy, eps=1e-5: oracle.batch_norm_train(x, dy=dy, eps=eps)),
    "batch_norm_nc": (lambda x, eps=1e-5: nbn.batch_norm_forward(x.reshape(-1, 40), training=True,
                                                                eps=eps),
                      nbn.batch_norm_backward,
                      lambda x, dy, eps=1e-5: oracle.batch_norm_train(
                          x.reshape(-1, 40), dy=None if dy is None else dy.reshape(-1, 40),
                          eps=eps)),
}


@pytest.fixture(autouse=True, params=["small", "general"])
def kernel_path(request, monkeypatch):
    """Every test twice: with the shape's own kernels (small inputs take the serial and fused
    batch_norm kernels), and through the general parallel kernels, with batch_norm's column
    reduction cut into blocks of a few rows, so the float32 block reductions, their float64
    redo and the block merges all run on these small shapes; blocks of 2 rows or more are
    shifted (read once), and those of a few noisy rows often stray and are read again."""
    if request.param == "general":
        monkeypatch.setattr(cpu_host, "SERIAL_MAX_ELEMENTS", 0)
        monkeypatch.setattr(cpu_host, "FUSED_COLUMNS_MAX_ELEMENTS", 0)
        monkeypatch.setattr(cpu_host, "COLUMN_BLOCK_BYTES", 6000)
        monkeypatch.setattr(cpu_host, "COLUMN_SHIFT_MIN_ROWS", 2)
        # blocks that short would send wide rows to the slab layout (SLAB_MIN_WIDE): keep the
        # columns under test here
        monkeypatch.setattr(cpu_host, "COLUMN_MIN_ROWS", 0)
        # and strips of 250 float32 / 125 float64 columns: float64 (8, 6, 40) runs two
        monkeypatch.setattr(cpu_host, "COLUMN_STRIP_BYTES", 1000)
        # and chunks of any size, so that several chunks' partials merge
        monkeypatch.setattr(cpu_host, "COLUMN_PARTIAL_MIN_ELEMENTS", 1)
    return request.param


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("mean", [1e4, 1e6, 1e8])
def test_float32_large_mean(rng, op, mean):
    """float32 data with std 1 around a large mean: statistics and outputs as accurate as the
    float32 data allows (the oracle sees the same rounded float32 values, in float64)."""
    fwd, bwd, ref_fn = OPS[op]
    x = (rng.standard_normal((8, 6, 40)) + mean).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, saved = fwd(x)
    dx = bwd(dy.reshape(y.shape), saved)[0]
    ref = ref_fn(x, dy)
    np.testing.assert_allclose(saved.rstd, ref["rstd"].reshape(saved.rstd.shape), rtol=2e-6)
    # The variance itself, wherever float32 can represent the data's spread (at mean 1e8 the
    # float32 spacing is 8, and every value rounds to the same number: variance 0).
    var = 1.0 / saved._rstd64 ** 2 - 1e-5
    ref_var = ref["var"].reshape(var.shape)
    spread = ref_var > 1e-2
    np.testing.assert_allclose(var[spread], ref_var[spread], rtol=1e-5)
    np.testing.assert_allclose(y, ref["y"].reshape(y.shape), rtol=1e-5, atol=2e-6)
    # dx to a few float32 ulps of its scale: at mean 1e8 (values on a grid of 8) |dx| reaches
    # ~400, and entries near 0 come out of a float32 difference of terms that size, so 2e-6
    # absolute would ask for 5e-9 relative (float64 column sums missed it on some seeds too:
    # 3.2e-6 over 20 seeds, all within 1.4e-7 of each channel's max |dx|).
    dx_ref = ref["dx"].reshape(dx.shape)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=max(2e-6, 5e-7 * np.abs(dx_ref).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(OPS))
def test_constant_groups(rng, dtype, op):
    """Variance 0: the output is exactly the bias (here 0), gradients finite."""
    fwd, bwd, _ = OPS[op]
    x = np.full((8, 6, 40), 3.25, dtype)
    y, saved = fwd(x)
    assert np.all(y == 0)
    dx = bwd(np.ones_like(y), saved)[0]
    assert np.all(np.isfinite(dx))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(OPS))
def test_huge_magnitudes(rng, dtype, op):
    """Values near the top of the dtype's range normalise to finite, correct values."""
    fwd, bwd, ref_fn = OPS[op]
    scale = 1e30 if dtype == np.float32 else 1e300
    x = (rng.standard_normal((8, 6, 40)) * scale).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, saved = fwd(x)
    dx = bwd(dy.reshape(y.shape), saved)[0]
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    # The reference normalises x/scale (same xhat; eps is 1e-5 of a unit variance there, so
    # the tolerance allows 1e-5 relative), and dx scales by 1/scale.
    ref = ref_fn(x.astype(np.float64) / scale, dy.astype(np.float64))
    np.testing.assert_allclose(y, ref["y"].reshape(y.shape), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx.astype(np.float64) * scale, ref["dx"].reshape(dx.shape),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", sorted(OPS))
def test_float32_block_sum_overflow(rng, op):
    """float32 data whose block sums overflow float32 (the provisional block mean is summed in
    the data's dtype; 40 values of mean 2e37 sum past 3.4e38): the float64 redo of the block
    (or, behind it, the rescaled reduction) keeps y and dx right."""
    fwd, bwd, ref_fn = OPS[op]
    scale = 1e37
    x = (rng.standard_normal((8, 6, 40)) * scale + 2 * scale).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, saved = fwd(x)
    dx = bwd(dy.reshape(y.shape), saved)[0]
    ref = ref_fn(x.astype(np.float64) / scale, dy.astype(np.float64))
    np.testing.assert_allclose(y, ref["y"].reshape(y.shape), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx.astype(np.float64) * scale, ref["dx"].reshape(dx.shape),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("mean", [0.0, 1e-18])
def test_float32_tiny_spread(rng, op, mean):
    """float32 data with std 1e-22 and eps = 0: the squared deviations (~1e-44) underflow
    float32, so a float32 sum of squares would lose them; the float64 redo of such blocks keeps
    the variance, y and dx right."""
    fwd, bwd, ref_fn = OPS[op]
    x = (rng.standard_normal((8, 6, 40)) * 1e-22 + mean).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, saved = fwd(x, eps=0.0)
    dx = bwd(dy.reshape(y.shape), saved)[0]
    ref = ref_fn(x, dy, eps=0.0)
    var = 1.0 / saved._rstd64 ** 2
    np.testing.assert_allclose(var, ref["var"].reshape(var.shape), rtol=1e-5)
    np.testing.assert_allclose(y, ref["y"].reshape(y.shape), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(dx.astype(np.float64) * 1e-22, ref["dx"].reshape(dx.shape) * 1e-22,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(4096, 64), (16384, 64)])
def test_float32_tall_columns_large_mean(rng, shape):
    """batch_norm over tall (N, C) float32 columns with mean 1e4, std 1: the column blocks sum
    in float32, and blocks of 1024 rows (the old default for 64 columns) gave variances 1.8e-6
    and y 3.6e-6 off. Both the fused small kernel (4096 rows) and the general path run here
    at their default block sizes (and at the kernel_path fixture's small ones)."""
    _check_float32_columns(rng, (rng.standard_normal(shape) + 1e4).astype(np.float32))


def _check_float32_columns(rng, x):
    """batch_norm forward and backward of float32 (N, C) x against the float64 oracle, to a few
    float32 ulps: the variance, the mean (in standard deviations), y and dx."""
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, saved = nbn.batch_norm_forward(x, None, None, training=True)
    dx = nbn.batch_norm_backward(dy, saved)[0]
    ref = oracle.batch_norm_train(x, dy=dy)
    var = 1.0 / saved._rstd64 ** 2 - 1e-5
    np.testing.assert_allclose(var, ref["var"].ravel(), rtol=5e-7)
    mean_err = np.abs(saved._mean64.ravel() - ref["mean"].ravel()) / np.sqrt(ref["var"].ravel())
    assert mean_err.max() < 1e-7  # in standard deviations
    # a few float32 ulps (at |y| ~ 4 one ulp is 4.8e-7)
    np.testing.assert_allclose(y, ref["y"], rtol=5e-7, atol=2e-7)
    np.testing.assert_allclose(dx, ref["dx"], rtol=5e-7, atol=2e-7)


@pytest.mark.parametrize("pattern", ["trend", "steps"])
@pytest.mark.parametrize("shape", [(4096, 64), (16384, 64)])
def test_float32_columns_whose_mean_moves(rng, shape, pattern):
    """Column blocks are read once, centred on a mean known in advance (the chunk's running
    mean, or for a chunk's first block the mean of x's first rows); here half the columns
    drift along the rows (a trend, or steps of 500 standard deviations every 32 rows), so
    blocks lie far from those means, and the statistics stay as exact as without drift (a
    shift of 0 instead fails every case)."""
    N, C = shape
    x = rng.standard_normal(shape) + 1e3
    rows = np.arange(N)[:, None]
    drift = 0.1 * rows if pattern == "trend" else 500.0 * (rows // 32 % 2)
    x[:, ::2] += drift
    _check_float32_columns(rng, x.astype(np.float32))


LONG_ROWS = {  # groups of several BLOCK-value blocks; the last axis (3000) carries the drift
    "layer_norm": ((6, 3000), lambda x: nbn.layer_norm_forward(x, 3000),
                   lambda x, dy: oracle.layer_norm(x, 3000, dy=dy)),
    "group_norm": ((2, 4, 3000), lambda x: nbn.group_norm_forward(x, 2),
                   lambda x, dy: oracle.group_norm(x, 2, dy=dy)),
    "instance_norm": ((2, 3, 3000), nbn.instance_norm_forward,
                      lambda x, dy: oracle.instance_norm(x, dy=dy)),
    "batch_norm": ((3, 2, 3000), lambda x: nbn.batch_norm_forward(x, training=True),
                   lambda x, dy: oracle.batch_norm_train(x, dy=dy)),
}


@pytest.mark.parametrize("pattern", ["trend", "steps"])
@pytest.mark.parametrize("op", sorted(LONG_ROWS))
def test_float32_long_groups_whose_mean_moves(rng, op, pattern):
    """A group's blocks after the first are read once, centred on the running mean of the
    blocks before them; here the values drift along each group (a trend, or steps of 500
    standard deviations from block to block), so blocks lie far from that mean, and the
    statistics stay as exact as without drift (a shift of 0 instead fails the kernels that
    shift: all but the small batch_norm, which reduces columns of 3 rows)."""
    shape, fwd, ref_fn = LONG_ROWS[op]
    j = np.arange(shape[-1])
    drift = 0.05 * j if pattern == "trend" else 500.0 * (j // 1024 % 2)
    x = (rng.standard_normal(shape) + 1e3 + drift).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, saved = fwd(x)
    dx = getattr(nbn, f"{op}_backward")(dy, saved)[0]
    ref = ref_fn(x, dy)
    var = 1.0 / saved._rstd64.ravel() ** 2 - 1e-5
    np.testing.assert_allclose(var, ref["var"].ravel(), rtol=5e-7)
    np.testing.assert_allclose(y, ref["y"].reshape(y.shape), rtol=5e-7, atol=3e-7)
    np.testing.assert_allclose(dx, ref["dx"].reshape(dx.shape), rtol=5e-7, atol=3e-7)


@pytest.mark.parametrize("op", sorted(OPS))
def test_float32_squares_overflow(rng, op):
    """float32 data with std 1e25: squared deviations overflow float32 (the float32 block sums
    of squares are redone in float64) but not float64."""
    fwd, bwd, ref_fn = OPS[op]
    scale = 1e25
    x = (rng.standard_normal((8, 6, 40)) * scale).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, saved = fwd(x)
    dx = bwd(dy.reshape(y.shape), saved)[0]
    ref = ref_fn(x.astype(np.float64), dy.astype(np.float64))
    var = 1.0 / saved._rstd64 ** 2
    np.testing.assert_allclose(var, ref["var"].reshape(var.shape), rtol=1e-5)
    np.testing.assert_allclose(y, ref["y"].reshape(y.shape), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(dx.astype(np.float64) * scale, ref["dx"].reshape(dx.shape) * scale,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the oracle's own inf - inf
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("op", ["layer_norm", "group_norm", "instance_norm"])
def test_nan_stays_in_its_group(rng, op, bad):
    fwd, _, ref_fn = OPS[op]
    x = rng.standard_normal((8, 6, 40)).astype(np.float32)
    x[2, 4, 7] = bad
    y, _ = fwd(x)
    ref = ref_fn(x, None)["y"].reshape(y.shape)  # NaN in exactly the affected group
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y).any()
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(y[ok], ref[ok], rtol=1e-5, atol=2e-6)


_RARE_OPS = {
    "layer_norm": lambda x, L, out: nbn.layer_norm(x, L, eps=1e-5, out=out),
    "rms_norm": lambda x, L, out: nbn.rms_norm(x, L, eps=1e-5, out=out),
    "add_layer_norm": lambda x, L, out: nbn.add_layer_norm(
        x, np.zeros_like(x), L, eps=1e-5, out=out)[0],
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the oracle's NaN row
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("shape", [(9, 40), (9, 4096), (900, 64)])  # serial, pairs, rows
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(_RARE_OPS))
def test_rare_rows_among_ordinary_ones(rng, op, dtype, shape, inplace):
    """Rows that need the rare paths of cpu._moments.moments (a float32 block sum past
    float32's range, squares that overflow float32 or float64 or underflow float32, NaN) among
    ordinary and constant rows: the common kernels mark them and leave them unwritten (y may
    be x), the redo kernel computes them, and every row matches the float64 reference, in
    place too (y over x: (9, 4096) runs the pairs kernel, whose odd last row is paired with
    itself)."""
    R, L = shape
    x = (rng.standard_normal(shape) + 0.5).astype(dtype)
    big = 1e37 if dtype == np.float32 else 1e300
    x[1] = x[1] * (big / 4) + big / 2            # float32: the block sums overflow
    x[3] = x[3] * (1e25 if dtype == np.float32 else 1e300)   # squares overflow
    x[4] = x[4] * 1e-22                          # float32: squares underflow
    x[5] = 7.0                                   # constant: stays on the common path
    x[7, L // 2] = np.nan
    y = _RARE_OPS[op](x.copy(), L, None)
    if inplace:
        xi = x.copy()
        assert _RARE_OPS[op](xi, L, xi) is xi
        np.testing.assert_array_equal(xi, y)
    centered = op != "rms_norm"
    for r in range(R):  # each row against the float64 reference of the row scaled by 2**-k
        row = x[r].astype(np.float64)
        k = 0 if r == 7 else int(np.frexp(np.abs(row).max())[1])
        ref = oracle.layer_norm(np.ldexp(row, -k)[None], L, eps=np.ldexp(1e-5, -2 * k),
                                centered=centered)["y"][0]
        if r == 7:
            assert np.isnan(y[r]).all()
            continue
        np.testing.assert_allclose(y[r], ref, rtol=2e-5, atol=2e-5, err_msg=f"row {r}")


def test_nan_stays_in_its_channel(rng):
    x = rng.standard_normal((8, 6, 40)).astype(np.float32)
    x[2, 4, 7] = np.nan
    y = nbn.batch_norm(x, training=True)
    assert np.isnan(y[:, 4]).all()
    assert not np.isnan(np.delete(y, 4, axis=1)).any()


@pytest.mark.parametrize("op", sorted(OPS))
def test_bitwise_identical_for_any_thread_count(rng, op):
    fwd, bwd, _ = OPS[op]
    x = (rng.standard_normal((64, 6, 40)) + 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            y, saved = fwd(x)
            results.append((y,) + tuple(bwd(dy.reshape(y.shape), saved)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def _results(rng_seed):
    """Every op forward and backward, and the data functions, on inputs above the serial
    size (layer_norm also on long rows, the pairs kernels), as one flat list of arrays."""
    rng = np.random.default_rng(rng_seed)
    x = (rng.standard_normal((160, 6, 40)) + 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    out = []
    for fwd, bwd, _ in OPS.values():
        y, saved = fwd(x)
        out += [y] + [g for g in bwd(dy.reshape(y.shape), saved) if g is not None]
    long_rows = x.reshape(-1, 4800)[:, :4096].copy()
    y, saved = nbn.layer_norm_forward(long_rows, 4096, np.ones(4096, np.float32),
                                     np.zeros(4096, np.float32))
    out += [y] + list(nbn.layer_norm_backward(np.ones_like(y), saved))
    X = x.reshape(-1, 40)
    X[::7, 3] = np.nan
    for axis in (0, 1):
        out += [nbn.zscore(X, axis=axis, nan_policy="omit"), nbn.minmax_scale(X, axis=axis),
                nbn.normalize(X, dim=axis), nbn.moments(X, axis, "omit").var()]
    # sparse: several chunks of stored values (per slot and per position: numbanorm._sparse)
    import scipy.sparse as sp
    S = sp.csr_array(np.where(rng.random((2000, 200)) < 0.4,
                              np.resize(x, (2000, 200)).astype(np.float64), 0.0))
    S.data[::11] = np.nan
    for axis in (0, 1):
        out += [nbn.normalize(S, dim=axis).data, nbn.moments(S, axis, "omit").var()]
    out.append(nbn.StandardScaler(with_mean=False).fit(S).var_)
    return out


def test_parallel_kernels_bitwise_identical_for_any_thread_count():
    """Inputs above the serial size run the parallel kernels with one thread too (never their
    serial twins, cpu._host._serial: compiled in the process against loaded from the cache,
    the two can differ in the last bits): one thread and all of them give the same bits, for
    every op, long rows and the data functions."""
    assert 160 * 6 * 40 > cpu_host.SERIAL_MAX_ELEMENTS
    parallel = _results(7)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _results(7)
    finally:
        numba.set_num_threads(before)
    assert len(parallel) == len(one) > 20
    for a, b in zip(parallel, one):
        np.testing.assert_array_equal(a, b)


def test_slab_grouping_never_changes_a_result(rng):
    """batch_norm's slab kernels split the channels into as many runs as there are threads
    (cpu_host._slab_groups); each channel's merges keep their order whatever the split, so
    every split, and every thread count, gives bitwise the same statistics and gradients."""
    from numbanorm.cpu import channels
    N, C, S = 8, 80, 64  # one chunk of the batch (C > MAX_PARTIALS), above the serial size
    x = (rng.standard_normal((N, C, S)) * 3 + 7).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    assert x.size > cpu_host.SERIAL_MAX_ELEMENTS
    mean, rstd = np.empty(C), np.empty(C)
    stats, grads = [], []
    for groups in (1, 2, 3, 7, C):
        pmean, pm2 = np.empty((1, C)), np.empty((1, C))
        channels.slab_partials(x.reshape(N * C, S), N, C, None, groups, pmean, pm2)
        stats.append((pmean.copy(), pm2.copy()))
        mean[:] = pmean[0]
        rstd[:] = 1 / np.sqrt(pm2[0] / (N * S) + 1e-5)
        dx = np.empty_like(x)
        sum_dy, sum_dyx = np.empty(C), np.empty(C)
        channels.slab_backward(dy.reshape(N * C, S), x.reshape(N * C, S), N, C, mean, rstd,
                               np.ones(C), True, True, groups, np.empty((1, C)),
                               np.empty((1, C)), dx.reshape(N * C, S), sum_dy, sum_dyx)
        grads.append((dx, sum_dy, sum_dyx))
    for got in stats[1:]:
        for a, b in zip(stats[0], got):
            np.testing.assert_array_equal(a, b)
    for got in grads[1:]:
        for a, b in zip(grads[0], got):
            np.testing.assert_array_equal(a, b)
    ref = oracle.batch_norm_train(x, dy=dy)
    np.testing.assert_allclose(stats[0][0][0], ref["mean"], rtol=1e-6)
    np.testing.assert_allclose(grads[0][0], ref["dx"], rtol=1e-4, atol=1e-5)
    # and through the API with one thread and with all of them
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            y, saved = nbn.batch_norm_forward(x, training=True)
            results.append((y,) + tuple(g for g in nbn.batch_norm_backward(dy, saved)
                                        if g is not None))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_eps_zero_and_variance_below_eps(rng):
    x = (rng.standard_normal((4, 50)) * 1e-4).astype(np.float64)
    for eps in (0.0, 1e-5):
        y = nbn.layer_norm(x, 50, eps=eps)
        np.testing.assert_allclose(y, oracle.layer_norm(x, 50, eps=eps)["y"], rtol=1e-10,
                                   atol=1e-12)


def test_concurrent_calls_match_serial(rng):
    """A thread pool normalising different arrays, and one eval-mode layer shared read-only,
    give exactly the serial results."""
    from concurrent.futures import ThreadPoolExecutor
    xs = [(rng.standard_normal((64, 32, 50)) + i).astype(np.float32) for i in range(8)]
    dy = rng.standard_normal((64, 32, 50)).astype(np.float32)
    layer = nbn.BatchNorm1d(32)
    layer.running_mean[:] = rng.standard_normal(32)
    layer.eval()

    def work(x):
        y, saved = nbn.group_norm_forward(x, 8)
        return (y, nbn.group_norm_backward(dy, saved)[0], nbn.batch_norm(x, training=True),
                layer(x))

    serial = [work(x) for x in xs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(work, xs * 3))
    for i, got in enumerate(concurrent):
        for a, b in zip(serial[i % len(xs)], got):
            np.testing.assert_array_equal(a, b)


def test_robustness_table_script():
    """The script behind the README's comparison table runs, and numbanorm's rows hold the
    documented guarantees on every adversarial case."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parent.parent / "scripts" / "robustness_table.py"
    spec = importlib.util.spec_from_file_location("robustness_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = []
    rows = module.run(lines.append)
    assert len(lines) == len(rows) + 2 and len(rows) >= 10
    for row in rows:
        err = row["numbanorm"]
        tol = 1e-14 if "float64" in row["case"] else 1e-6
        assert err["y"] < tol and err["dx"] < tol, row
        assert err["var"] is None or err["var"] < 1e-5, row
