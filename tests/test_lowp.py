"""16-bit data (float16, ml_dtypes.bfloat16): conversions, every op against the float64 oracle
on the same 16-bit values, PyTorch's 16-bit CPU ops, adversarial data, the dtype rules and
their errors, and the portable float16 route.

Accuracy contract: a 16-bit result is the float32 computation rounded once, so it is within
one 16-bit ulp of the float64 oracle rounded to 16 bits; near zero, where a value comes from
cancelling terms, float32's rounding of those terms may exceed a 16-bit ulp, and that much
(a few float32 ulps of the terms' scale) is allowed, no more.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import numbanorm as nbn  # noqa: E402
import oracle  # noqa: E402
from conftest import (ACCEPTED, assert_close, assert_half, dx_scale, half_params,  # noqa: E402
                      ulp16)

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
HALF = [F16, BF16]
IDS = ["float16", "bfloat16"]
# float32's eps: rms_norm's default for 16-bit x, and the eps given to the oracle
RMS_EPS = float(np.finfo(np.float32).eps)


def _data(rng, shape, dtype, mean=0.0, std=1.0):
    return (rng.standard_normal(shape) * std + mean).astype(dtype)


# ---------------------------------------------------------------------------------------------
# conversions: bit-exact against NumPy (float16) and ml_dtypes (bfloat16)

_STORE_SAMPLES = None


def _store_samples():
    """float32 bit patterns: random ones, every 16-bit value, the ties and neighbours of
    every float16 and bfloat16 rounding boundary, subnormals, overflow, inf and NaN."""
    global _STORE_SAMPLES
    if _STORE_SAMPLES is None:
        rng = np.random.default_rng(1)
        top = np.arange(65536, dtype=np.uint32) << 16
        f16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
        with np.errstate(invalid="ignore"):
            h = f16.astype(np.float32).view(np.uint32)
        parts = [rng.integers(0, 2 ** 32, 2_000_000, dtype=np.uint64).astype(np.uint32), top,
                 top | 0x8000, top | 0x7fff, top | 0x8001]
        for d in (0xfff, 0x1000, 0x1001, 0x800, 0x2000):  # float16 ties and neighbours
            parts += [h + d, h - d]
        parts.append(np.array([0x7f800001, 0xff800001, 0x7fc00000, 0x7f800000, 0x477ff000,
                               0x477fefff, 0x477fe000, 0x33000000, 0x33000001, 0x32ffffff,
                               0x387fe000, 0x387ff000, 0x00000001, 0x80000000], np.uint32))
        _STORE_SAMPLES = np.concatenate(parts).view(np.float32)
    return _STORE_SAMPLES


def _convert(name):
    """A compiled loop out[i] = conversion(a[i]) of one of numbanorm.cpu._half's conversions."""
    from numba import njit

    from numbanorm.cpu import _half
    conversion = getattr(_half, name)

    @njit
    def run(a, out):
        for i in range(a.size):
            out[i] = conversion(a[i])
    return run


def test_bfloat16_conversions_bit_exact():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    out = np.empty(65536, np.float32)
    _convert("bf16_load")(bits, out)
    ref = bits.view(BF16).astype(np.float32)
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    f = _store_samples()
    got = np.empty(f.size, np.uint16)
    _convert("bf16_store")(f, got)
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_array_equal(got, f.astype(BF16).view(np.uint16))


@pytest.mark.parametrize("route", ["integer", "selected"])
def test_float16_conversions_bit_exact(route):
    """The integer route matches NumPy on every bit pattern, NaN payloads included; the
    selected route (F16C where the CPU has it) on every value, NaN as NaN of the same sign."""
    from numbanorm._config import FLOAT16_ROUTE
    suffix = "_int" if route == "integer" else ""
    exact_nan = route == "integer" or FLOAT16_ROUTE == "integer"
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
    out = np.empty(65536, np.float32)
    _convert("f16_load" + suffix)(bits, out)
    ref = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(out.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])
    assert np.isnan(out[nan]).all()
    assert (np.signbit(out[nan]) == np.signbit(ref[nan])).all()
    if exact_nan:
        np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    f = _store_samples()
    got = np.empty(f.size, np.int16)
    _convert("f16_store" + suffix)(f, got)
    with np.errstate(invalid="ignore", over="ignore"):
        want = f.astype(np.float16).view(np.int16)
    nan = np.isnan(f)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(got[nan].view(np.float16)).all()
    if exact_nan:
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# every op against the float64 oracle

LAYER_SHAPES = [(1, 8), (7, 13), (3, 5, 31), (4, 2000), (300, 64), (3, 8192)]


@pytest.mark.parametrize("dtype", HALF, ids=IDS)
@pytest.mark.parametrize("shape", LAYER_SHAPES)
@pytest.mark.parametrize("params", ["same", "mixed", "none"])
def test_layer_and_rms_norm(rng, dtype, shape, params):
    L = shape[-1]
    x = _data(rng, shape, dtype, mean=3.0, std=2.0)
    dy = _data(rng, shape, dtype)
    w, b = half_params(rng, L, dtype, params)
    y, saved = nbn.layer_norm_forward(x, L, w, b)
    dx, dw, db = nbn.layer_norm_backward(dy, saved)
    ref = oracle.layer_norm(x, L, w, b, 1e-5, dy)
    assert_half(y, ref["y"], dtype, name="y")
    assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy, w), name="dx")
    assert saved.mean.dtype == saved.rstd.dtype == np.float32
    assert_close(saved.mean, ref["mean"], np.float32, 3.0, name="mean")
    assert_close(saved.rstd, ref["rstd"], np.float32, name="rstd")
    if w is not None:
        assert dw.dtype == w.dtype and db.dtype == b.dtype
        n = x.size // L
        scale = np.sqrt(n) * np.abs(ref["dweight"]).max()
        if dw.dtype == np.float32:
            assert_close(dw, ref["dweight"], np.float32, np.sqrt(n), name="dweight")
            assert_close(db, ref["dbias"], np.float32, np.sqrt(n), name="dbias")
        else:
            assert_half(dw, ref["dweight"], dtype, scale, name="dweight")
            assert_half(db, ref["dbias"], dtype, scale, name="dbias")
    else:
        assert dw is None and db is None
    # rms_norm: eps=None is float32's eps for 16-bit input (PyTorch 2.13)
    y, saved = nbn.rms_norm_forward(x, L, w)
    dx, dw = nbn.rms_norm_backward(dy, saved)
    ref = oracle.rms_norm(x, L, w, RMS_EPS, dy)
    assert_half(y, ref["y"], dtype, name="rms y")
    assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy, w), name="rms dx")
    assert saved.mean is None and saved.rstd.dtype == np.float32


GROUP_CASES = [((2, 6, 5), 3), ((3, 4), 2), ((2, 64, 9, 9), 32), ((4, 32, 16, 16), 8)]


@pytest.mark.parametrize("dtype", HALF, ids=IDS)
@pytest.mark.parametrize("shape,groups", GROUP_CASES)
def test_group_and_instance_norm(rng, dtype, shape, groups):
    C = shape[1]
    x = _data(rng, shape, dtype, mean=-2.0, std=3.0)
    dy = _data(rng, shape, dtype)
    w, b = half_params(rng, C, dtype, "same")
    y, saved = nbn.group_norm_forward(x, groups, w, b)
    dx, dw, db = nbn.group_norm_backward(dy, saved)
    ref = oracle.group_norm(x, groups, w, b, 1e-5, dy)
    assert_half(y, ref["y"], dtype, name="y")
    assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy, w), name="dx")
    scale = np.sqrt(x.size) * max(np.abs(ref["dweight"]).max(), np.abs(ref["dbias"]).max())
    assert_half(dw, ref["dweight"], dtype, scale, name="dweight")
    assert_half(db, ref["dbias"], dtype, scale, name="dbias")
    if len(shape) > 2:
        w, b = half_params(rng, C, dtype, "mixed")
        y, saved = nbn.instance_norm_forward(x, weight=w, bias=b)
        dx, dw, db = nbn.instance_norm_backward(dy, saved)
        ref = oracle.instance_norm(x, w, b, 1e-5, dy)
        assert_half(y, ref["y"], dtype, name="instance y")
        assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy, w), name="instance dx")
        assert dw.dtype == np.float32
        assert_close(dw, ref["dweight"], np.float32, np.sqrt(x.size), name="instance dweight")


BATCH_SHAPES = [(5, 3), (64, 100), (3, 5, 70), (2, 3, 9, 11), (8, 16, 24, 24), (600, 64),
                (256, 40, 4, 4)]


@pytest.mark.parametrize("dtype", HALF, ids=IDS)
@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_batch_norm(rng, dtype, shape):
    """Training (fused small, slabs, columns) and eval, running buffers in the parameters'
    dtype (x's, or float32)."""
    C = shape[1]
    x = _data(rng, shape, dtype, mean=4.0, std=0.5)
    dy = _data(rng, shape, dtype)
    kind = "same" if len(shape) % 2 else "mixed"
    w, b = half_params(rng, C, dtype, kind)
    pdt = w.dtype
    rm, rv = np.zeros(C, pdt), np.ones(C, pdt)
    y, saved = nbn.batch_norm_forward(x, rm, rv, w, b, training=True, momentum=0.5)
    dx, dw, db = nbn.batch_norm_backward(dy, saved)
    ref = oracle.batch_norm_train(x, w, b, 1e-5, dy)
    assert_half(y, ref["y"], dtype, name="y")
    assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy, w), name="dx")
    assert rm.dtype == pdt and dw.dtype == pdt and db.dtype == pdt
    np.testing.assert_allclose(rm.astype(np.float64), (0.5 * ref["mean"]).astype(pdt)
                               .astype(np.float64), rtol=1e-6)
    np.testing.assert_allclose(rv.astype(np.float64), (0.5 + 0.5 * ref["var_unbiased"])
                               .astype(pdt).astype(np.float64), rtol=1e-6)
    # eval with those buffers
    y, saved = nbn.batch_norm_forward(x, rm, rv, w, b, training=False)
    dx, dw, db = nbn.batch_norm_backward(dy, saved)
    ref = oracle.batch_norm_eval(x, rm, rv, w, b, 1e-5, dy)
    assert_half(y, ref["y"], dtype, name="eval y")
    assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy, w), name="eval dx")


# ---------------------------------------------------------------------------------------------
# against PyTorch's 16-bit CPU ops: numbanorm at least as close to the oracle

def _torch_cases(torch, F, x, w, b, G):
    L = x.shape[-1]
    C = x.shape[1]
    return {
        "layer_norm": (lambda t, wt, bt: F.layer_norm(t, (L,), wt[:L], bt[:L]),
                       lambda: nbn.layer_norm(x, L, w[:L], b[:L]),
                       lambda: oracle.layer_norm(x, L, w[:L], b[:L])["y"]),
        "rms_norm": (lambda t, wt, bt: F.rms_norm(t, (L,), wt[:L]),
                     lambda: nbn.rms_norm(x, L, w[:L]),
                     lambda: oracle.rms_norm(x, L, w[:L], RMS_EPS)["y"]),
        "group_norm": (lambda t, wt, bt: F.group_norm(t, G, wt[:C], bt[:C]),
                       lambda: nbn.group_norm(x, G, w[:C], b[:C]),
                       lambda: oracle.group_norm(x, G, w[:C], b[:C])["y"]),
        "batch_norm": (lambda t, wt, bt: F.batch_norm(t, None, None, wt[:C], bt[:C], True),
                       lambda: nbn.batch_norm(x, None, None, w[:C], b[:C], True),
                       lambda: oracle.batch_norm_train(x, w[:C], b[:C])["y"]),
    }


@pytest.mark.parametrize("dtype", HALF, ids=IDS)
@pytest.mark.parametrize("mean", [0.0, 100.0])
def test_against_torch(rng, dtype, mean):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tdt = torch.float16 if dtype == F16 else torch.bfloat16
    x = _data(rng, (16, 32, 8, 64), dtype, mean=mean, std=1.0 + mean / 10)
    w = (1 + 0.5 * rng.standard_normal(64)).astype(dtype)
    b = rng.standard_normal(64).astype(dtype)
    xt = torch.from_numpy(x.astype(np.float32)).to(tdt)
    wt = torch.from_numpy(w.astype(np.float32)).to(tdt)
    bt = torch.from_numpy(b.astype(np.float32)).to(tdt)
    for name, (theirs, ours, ref) in _torch_cases(torch, F, x, w, b, 8).items():
        r = ref()
        mine = ours().astype(np.float64)
        with torch.no_grad():
            t = theirs(xt, wt, bt).float().numpy().astype(np.float64)
        err_ours = np.abs(mine - r).max()
        err_torch = np.abs(t - r).max()
        assert err_ours <= err_torch * 1.0001 + 1e-12, (name, err_ours, err_torch)
        assert_half(ours(), r, dtype, name=name)


# ---------------------------------------------------------------------------------------------
# adversarial data

def test_float16_squares_overflow(rng):
    """|x| ~ 60000: x^2 is far beyond float16's range; the statistics are float32/64."""
    x = (60000 - 5000 * rng.random((6, 500))).astype(np.float16)
    x[::2] *= -1
    dy = _data(rng, x.shape, F16)
    for fn, ref_fn in ((lambda: nbn.layer_norm_forward(x, 500),
                        lambda: oracle.layer_norm(x, 500, dy=dy)),
                       (lambda: nbn.rms_norm_forward(x, 500),
                        lambda: oracle.rms_norm(x, 500, eps=RMS_EPS, dy=dy)),
                       (lambda: nbn.batch_norm_forward(x.reshape(6, 10, 50), training=True),
                        lambda: oracle.batch_norm_train(x.reshape(6, 10, 50), dy=dy.reshape(
                            6, 10, 50)))):
        y, saved = fn()
        ref = ref_fn()
        dx = (nbn.batch_norm_backward if saved.op == "batch_norm" else
              nbn.layer_norm_backward if saved.op == "layer_norm" else
              lambda d, s: nbn.rms_norm_backward(d, s))(dy.reshape(y.shape), saved)[0]
        assert np.isfinite(y).all() and np.isfinite(dx).all()
        assert_half(y, ref["y"], F16, name=saved.op + " y")
        assert_half(dx, ref["dx"], F16, dx_scale(ref, dy), name=saved.op + " dx")
    z = nbn.zscore(x, axis=1)
    assert_half(z, oracle.zscore(x, axis=1), F16, name="zscore")


def test_bfloat16_large_mean(rng):
    """bfloat16 data with mean 1e4 and std 100 (bfloat16's spacing at 1e4 is 64): the
    variance of the rounded values is kept."""
    x = _data(rng, (8, 4096), BF16, mean=1e4, std=100.0)
    dy = _data(rng, x.shape, BF16)
    y, saved = nbn.layer_norm_forward(x, 4096)
    ref = oracle.layer_norm(x, 4096, dy=dy)
    assert_half(y, ref["y"], BF16, name="y")
    assert_half(nbn.layer_norm_backward(dy, saved)[0], ref["dx"], BF16, dx_scale(ref, dy),
                name="dx")
    np.testing.assert_allclose(1 / saved.rstd.astype(np.float64) ** 2, ref["var"] + 1e-5,
                               rtol=1e-6)
    xb = x.reshape(8, 64, 64)
    y = nbn.batch_norm(xb, None, None, training=True)
    assert_half(y, oracle.batch_norm_train(xb)["y"], BF16, name="batch_norm y")


@pytest.mark.parametrize("dtype", HALF, ids=IDS)
def test_constant_groups_give_bias(dtype):
    x = np.full((3, 4, 5, 5), 7.5, dtype)
    w16 = np.full(4, 2.0, dtype)
    b16 = np.array([0.1, -3.0, 7.0, 0.0], dtype)
    b32 = np.array([0.1, -3.0, 7.0, 0.0], np.float32)
    for w, b in ((w16, b16), (w16.astype(np.float32), b32)):
        want = np.broadcast_to(b.astype(dtype)[None, :, None, None], x.shape)
        np.testing.assert_array_equal(nbn.group_norm(x, 2, w, b), want)
        np.testing.assert_array_equal(nbn.instance_norm(x, weight=w, bias=b), want)
        np.testing.assert_array_equal(nbn.batch_norm(x, None, None, w, b, True), want)
        rows = np.full((3, 4), 7.5, dtype)
        np.testing.assert_array_equal(nbn.layer_norm(rows, 4, w, b),
                                      np.broadcast_to(b.astype(dtype), rows.shape))


# ---------------------------------------------------------------------------------------------
# layers and the dtype rules

@pytest.mark.parametrize("dtype", HALF, ids=IDS)
def test_layers(rng, dtype):
    x = _data(rng, (4, 6, 5, 5), dtype, mean=1.0)
    dy = _data(rng, x.shape, dtype)
    # a 16-bit layer keeps 16-bit parameters and gradients
    ln = nbn.LayerNorm((5, 5), dtype=dtype)
    assert ln.weight.dtype == dtype
    y = ln(x)
    ln.backward(dy)
    assert y.dtype == dtype and ln.grad_weight.dtype == dtype
    # a float32 layer on 16-bit input: float32 parameters and buffers (mixed), 16-bit output
    bn = nbn.BatchNorm2d(6)
    y = bn(x)
    dx = bn.backward(dy)
    ref = oracle.batch_norm_train(x, dy=dy)
    assert y.dtype == dx.dtype == dtype
    assert bn.running_mean.dtype == bn.grad_weight.dtype == np.float32
    assert_half(y, ref["y"], dtype, name="y")
    assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy), name="dx")
    gn = nbn.GroupNorm(3, 6, dtype=dtype)
    assert gn(x).dtype == dtype
    rms = nbn.RMSNorm(5)
    assert_half(rms(x), oracle.rms_norm(x, 5, eps=RMS_EPS)["y"], dtype, name="RMSNorm")
    inorm = nbn.InstanceNorm2d(6, affine=True, track_running_stats=True, dtype=dtype)
    assert inorm(x).dtype == dtype and inorm.running_var.dtype == dtype
    state = nbn.LayerNorm((5, 5), dtype=dtype)
    state.load_state_dict({"weight": np.full((5, 5), 2.0, dtype),
                           "bias": np.zeros((5, 5), dtype)})
    assert state.weight.dtype == dtype and (state.weight.astype(np.float32) == 2).all()


def test_dtype_errors(rng):
    x = _data(rng, (4, 6), BF16)
    f8 = np.ones((4, 6), ml_dtypes.float8_e4m3fn)
    for fn in (lambda a: nbn.layer_norm(a, 6), lambda a: nbn.batch_norm(a, training=True),
               lambda a: nbn.rms_norm(a, 6), lambda a: nbn.group_norm(a, 2)):
        with pytest.raises(TypeError, match=f"x must have dtype {ACCEPTED}, got float8"):
            fn(f8)
    for fn, name in ((lambda a: nbn.zscore(a), "a"), (lambda a: nbn.minmax_scale(a), "X"),
                     (lambda a: nbn.normalize(a), "x"), (lambda a: nbn.moments(a), "a")):
        with pytest.raises(TypeError, match=f"{name} must be an array of real numbers "
                                            r"\(float16, bfloat16"):
            fn(f8)
    # parameters: x's dtype or float32, all of one dtype
    w32 = np.ones(6, np.float32)
    with pytest.raises(TypeError, match="weight must have the input's dtype bfloat16 or "
                                        "float32, got float64"):
        nbn.layer_norm(x, 6, np.ones(6))
    with pytest.raises(TypeError, match="bias must have the dtype of weight, float32"):
        nbn.layer_norm(x, 6, w32, np.zeros(6, BF16))
    with pytest.raises(TypeError, match="running_var must have the dtype of weight"):
        nbn.batch_norm(x, np.zeros(6, np.float32), np.ones(6, BF16), w32, training=True)
    with pytest.raises(TypeError, match="weight must have the input's dtype float32, got "
                                        "bfloat16"):
        nbn.layer_norm(x.astype(np.float32), 6, np.ones(6, BF16))
    # dy and out of the other 16-bit dtype
    y, saved = nbn.layer_norm_forward(x, 6)
    with pytest.raises(TypeError, match="dy must have the forward input's dtype bfloat16"):
        nbn.layer_norm_backward(np.ones((4, 6), np.float16), saved)
    with pytest.raises(TypeError, match="out must have the input's dtype bfloat16"):
        nbn.layer_norm(x, 6, out=np.empty((4, 6), np.float16))
    with pytest.raises(TypeError, match="out must have dtype float16"):
        nbn.zscore(x.astype(np.float16), out=np.empty((4, 6), BF16))


# ---------------------------------------------------------------------------------------------
# the data family

@pytest.mark.parametrize("dtype", HALF, ids=IDS)
def test_data_functions(rng, dtype):
    X = _data(rng, (3000, 7), dtype, mean=50.0, std=4.0)
    X[::31, 2] = np.nan
    for axis in (0, 1, (0, 1)):
        z = nbn.zscore(X, axis=axis, nan_policy="omit")
        assert_half(z, oracle.zscore(X, axis=axis, omit=True), dtype, name=f"zscore {axis}")
    m = nbn.minmax_scale(X, feature_range=(-1, 1))
    assert_half(m, oracle.minmax_scale(X, (-1, 1)), dtype, name="minmax_scale")
    Y = np.nan_to_num(X.astype(np.float32)).astype(dtype)
    for p in (2.0, 1.0, np.inf):
        u = nbn.normalize(Y, p=p, dim=1)
        assert_half(u, oracle.normalize(Y, p, 1), dtype, name=f"normalize {p}")
    mo = nbn.moments(X, 0, "omit")
    Xf = X.astype(np.float64)
    assert mo.mean.dtype == np.float64
    np.testing.assert_allclose(mo.mean, np.nanmean(Xf, axis=0), rtol=1e-13)
    np.testing.assert_allclose(mo.var(), np.nanvar(Xf, axis=0), rtol=1e-12)
    np.testing.assert_array_equal(mo.min, np.nanmin(Xf, axis=0))
    np.testing.assert_array_equal(mo.max, np.nanmax(Xf, axis=0))
    stream = nbn.Moments.empty((7,), 0, "omit")
    for chunk in np.array_split(X, 7):
        stream.update(chunk)
    np.testing.assert_allclose(stream.mean, mo.mean, rtol=1e-13)
    z, saved = nbn.zscore_forward(X[:, :3], axis=0, nan_policy="omit")
    dz = nbn.zscore_backward(np.ones_like(z), saved)
    assert z.dtype == dz.dtype == dtype


@pytest.mark.parametrize("dtype", HALF, ids=IDS)
def test_scalers(rng, dtype):
    from numbanorm.preprocessing import MinMaxScaler, Normalizer, StandardScaler
    X = _data(rng, (2000, 5), dtype, mean=10.0, std=3.0)
    Xf = X.astype(np.float64)
    s = StandardScaler().fit(X)
    np.testing.assert_allclose(s.mean_, Xf.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(s.var_, Xf.var(axis=0), rtol=1e-12)
    t = s.transform(X)
    assert_half(t, (Xf - Xf.mean(0)) / Xf.std(0), dtype, name="StandardScaler")
    back = s.inverse_transform(t)
    assert back.dtype == dtype
    m = MinMaxScaler().fit(X)
    assert_half(m.transform(X), (Xf - Xf.min(0)) / (Xf.max(0) - Xf.min(0)), dtype,
                name="MinMaxScaler")
    n = Normalizer().fit(X).transform(X)  # fit too: it refused bfloat16 before
    assert_half(n, Xf / np.linalg.norm(Xf, axis=1, keepdims=True), dtype, name="Normalizer")


def test_dask_half(rng):
    da = pytest.importorskip("dask.array")
    x = _data(rng, (400, 64), BF16, mean=2.0)
    d = da.from_array(x, chunks=(100, 64))
    np.testing.assert_array_equal(nbn.layer_norm(d, 64).compute(), nbn.layer_norm(x, 64))
    z = nbn.zscore(d, axis=0).compute()
    assert z.dtype == BF16
    assert_half(z, oracle.zscore(x, axis=0), BF16, name="dask zscore")


# ---------------------------------------------------------------------------------------------
# the float16 routes: the integer route runs where F16C is absent or not wanted

def route_case():
    """(x, dy, {y, dx, z}): layer_norm forward and backward and zscore on float16 data, run in
    this process and in the fresh ones of test_float16_integer_route."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((5, 300)) * 3 + 1).astype(np.float16)
    dy = rng.standard_normal(x.shape).astype(np.float16)
    y, saved = nbn.layer_norm_forward(x, 300)
    return x, dy, dict(y=y, dx=nbn.layer_norm_backward(dy, saved)[0], z=nbn.zscore(x, axis=1))


_ROUTE_SCRIPT = r"""
import sys
import numpy as np
from numbanorm._config import FLOAT16_ROUTE
from test_lowp import route_case
np.savez(sys.argv[1], route=FLOAT16_ROUTE, **route_case()[2])
"""


@pytest.mark.parametrize("env", [{"NUMBANORM_FLOAT16_ROUTE": "integer"},
                                 {"NUMBA_CPU_NAME": "generic"}],
                         ids=["forced", "generic-cpu"])
def test_float16_integer_route(tmp_path, env):
    """A fresh process on the integer route (forced, or under NUMBA_CPU_NAME=generic, where
    F16C would crash the process) gives the oracle's numbers to an ulp. (Not this process's
    bits: without F16C LLVM also drops AVX-512, which depends on it, and narrower vectors sum
    in another order.)"""
    x, dy, mine = route_case()
    here = os.path.dirname(os.path.abspath(__file__))
    out = tmp_path / "route.npz"
    run_env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), **env)
    run_env.pop("NUMBA_CPU_FEATURES", None)
    run = subprocess.run([sys.executable, "-c", _ROUTE_SCRIPT, str(out)], env=run_env,
                         cwd=here, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(out)
    assert str(got["route"]) == "integer"
    ref = oracle.layer_norm(x, 300, dy=dy)
    assert_half(got["y"], ref["y"], F16, name="y")
    assert_half(got["dx"], ref["dx"], F16, dx_scale(ref, dy), name="dx")
    assert_half(got["z"], oracle.zscore(x, axis=1), F16, name="z")
    for name, ours in mine.items():  # and this process's, to an ulp
        assert np.abs(got[name].astype(np.float64) - ours.astype(np.float64)).max() <= \
            ulp16(np.abs(ours.astype(np.float64)).max(), F16), name
