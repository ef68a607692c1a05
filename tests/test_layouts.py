"""Channels-last images (channel_axis and channels-last memory for batch, group and instance
norm) and the fused residual add + layer/RMS norm, against the float64 oracle and PyTorch."""
import numpy as np
import pytest

import numbanorm as nbn
import oracle
from conftest import assert_close, assert_half

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover
    torch = None
try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

DTYPES = [np.float32, np.float64]


def _data(rng, shape, dtype, mean=0.0, std=1.0):
    return (rng.standard_normal(shape) * std + mean).astype(dtype)


def _op(name, x, w, b, axis=1, keep=True, **kw):
    """(y, saved) of one channel op, oracle-comparable arguments."""
    if name == "batch_norm":
        return nbn.batch_norm_forward(x, kw.get("rm"), kw.get("rv"), w, b, training=True,
                                     channel_axis=axis)
    if name == "group_norm":
        return nbn.group_norm_forward(x, 2, w, b, channel_axis=axis)
    return nbn.instance_norm_forward(x, kw.get("rm"), kw.get("rv"), w, b, channel_axis=axis)


def _oracle(name, x_nchw, w, b, dy_nchw):
    if name == "batch_norm":
        return oracle.batch_norm_train(x_nchw, w, b, 1e-5, dy_nchw)
    if name == "group_norm":
        return oracle.group_norm(x_nchw, 2, w, b, 1e-5, dy_nchw)
    return oracle.instance_norm(x_nchw, w, b, 1e-5, dy_nchw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["batch_norm", "group_norm", "instance_norm"])
@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (2, 3, 1, 1, 4), (4, 70, 10)])
def test_channels_last_matches_oracle(rng, op, shape, dtype):
    """(N, *spatial, C) data three ways, channel_axis=-1, its transpose to (N, C, *spatial)
    (channels-last memory, computed where it lies), and a channels-first copy, against the
    oracle; y keeps x's layout, dx dy's."""
    C = shape[-1]
    x_last = _data(rng, shape, dtype, mean=3.0, std=2.0)
    dy_last = _data(rng, shape, dtype)
    w, b = _data(rng, C, dtype), _data(rng, C, dtype)
    perm = (0, x_last.ndim - 1) + tuple(range(1, x_last.ndim - 1))
    ref = _oracle(op, x_last.transpose(perm), w, b, dy_last.transpose(perm))
    views = ((x_last, dy_last, -1), (x_last.transpose(perm), dy_last.transpose(perm), 1))
    for x, dy, axis in views:
        y, saved = _op(op, x, w, b, axis)
        y_first = y if axis == 1 else y.transpose(perm)
        assert_close(y_first, ref["y"], dtype, scale=4.0, name=f"{op} y")
        assert y.strides == x.strides, "y keeps x's memory layout"
        dx, dw, db = getattr(nbn, f"{op}_backward")(dy, saved)
        assert dx.strides == dy.strides
        assert_close(dx if axis == 1 else dx.transpose(perm), ref["dx"], dtype, scale=8.0,
                     name=f"{op} dx")
        assert_close(dw, ref["dweight"], dtype, scale=50.0, name=f"{op} dweight")
        assert_close(db, ref["dbias"], dtype, scale=50.0, name=f"{op} dbias")
        # dy of the other layout: dx in dy's layout, same numbers
        dy_other = np.ascontiguousarray(dy) if not dy.flags.c_contiguous else dy.copy()
        dx2 = getattr(nbn, f"{op}_backward")(dy_other, saved)[0]
        np.testing.assert_array_equal(dx2, dx)


def test_channels_last_running_buffers_eval_and_out(rng):
    """Running buffers updated as the channels-first path updates them; eval mode, out= of
    either layout and in place."""
    x = _data(rng, (4, 5, 3, 6), np.float32, mean=1.0)
    xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    for op in ("batch_norm", "instance_norm"):
        rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
        rm2, rv2 = rm.copy(), rv.copy()
        _op(op, x, None, None, -1, rm=rm, rv=rv)
        _op(op, xc, None, None, 1, rm=rm2, rv=rv2)
        np.testing.assert_allclose(rm, rm2, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(rv, rv2, rtol=1e-6, atol=1e-7)
    y_eval = nbn.batch_norm(x, rm, rv, channel_axis=-1)
    np.testing.assert_allclose(y_eval.transpose(0, 3, 1, 2), nbn.batch_norm(xc, rm, rv),
                               rtol=1e-6, atol=1e-6)
    ref = nbn.group_norm(xc, 3)
    out_first = np.empty_like(xc)
    nbn.group_norm(x, 3, out=np.moveaxis(out_first, 1, -1), channel_axis=-1)
    np.testing.assert_allclose(out_first, ref, rtol=1e-5, atol=1e-6)
    xi = x.copy()
    assert nbn.group_norm(xi, 3, out=xi, channel_axis=-1) is xi
    np.testing.assert_allclose(xi.transpose(0, 3, 1, 2), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, x.copy())  # inputs never modified


def test_channels_last_half(rng):
    """bfloat16 images channels-last: within a 16-bit ulp of the oracle."""
    if BF16 is None:
        pytest.skip("ml_dtypes not installed")
    x = _data(rng, (2, 4, 5, 8), np.float32).astype(BF16)
    dy = _data(rng, (2, 4, 5, 8), np.float32).astype(BF16)
    ref = oracle.group_norm(x.astype(np.float64).transpose(0, 3, 1, 2), 4, None, None, 1e-5,
                            dy.astype(np.float64).transpose(0, 3, 1, 2))
    y, saved = nbn.group_norm_forward(x, 4, channel_axis=-1)
    assert_half(y.transpose(0, 3, 1, 2), ref["y"], BF16, name="y")
    dx = nbn.group_norm_backward(dy, saved)[0]
    assert_half(dx.transpose(0, 3, 1, 2), ref["dx"], BF16, name="dx")


def test_channels_last_bits_do_not_depend_on_threads(rng):
    """One work item per image, in a fixed partition of the rows: the same bits on one thread
    and on all."""
    import numba
    x = _data(rng, (7, 40, 40, 16), np.float32, mean=2.0)
    dy = _data(rng, x.shape, np.float32)
    results = []
    threads = numba.get_num_threads()
    for t in sorted({1, threads}):
        numba.set_num_threads(t)
        try:
            y, saved = nbn.group_norm_forward(x, 4, channel_axis=-1)
            results.append((y,) + nbn.group_norm_backward(dy, saved))
        finally:
            numba.set_num_threads(threads)
    for a, b in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES + ["bfloat16"])
@pytest.mark.parametrize("op", ["group_norm", "instance_norm"])
@pytest.mark.parametrize("shape", [(1, 48, 48, 16), (2, 24, 30, 48)])
def test_few_large_images_are_split(rng, shape, op, dtype):
    """Fewer images than CHANNELS_LAST_SPLIT_ITEMS, each cut into chunks of rows (the split_*
    kernels): the oracle's numbers, forward and backward, the same bits on one thread and on
    all."""
    import numba
    from numbanorm.cpu._host import _image_chunks
    N, S, C = shape[0], shape[1] * shape[2], shape[-1]
    assert _image_chunks(N, S, N * S * C) > 1  # the split path is the one tested
    if dtype == "bfloat16" and BF16 is None:
        pytest.skip("ml_dtypes not installed")
    dt = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    x = _data(rng, shape, np.float32, mean=3.0, std=2.0).astype(dt)
    dy = _data(rng, shape, np.float32).astype(dt)
    pdt = np.float32 if dtype == "bfloat16" else dt
    w, b = _data(rng, C, pdt), _data(rng, C, pdt)
    G = 4 if op == "group_norm" else C
    x64, dy64 = (a.astype(np.float64).transpose(0, 3, 1, 2) for a in (x, dy))
    ref = oracle.group_norm(x64, G, w.astype(np.float64), b.astype(np.float64), 1e-5, dy64)
    results = []
    threads = numba.get_num_threads()
    for t in sorted({1, threads}):
        numba.set_num_threads(t)
        try:
            fwd = getattr(nbn, f"{op}_forward")
            y, saved = (fwd(x, G, w, b, channel_axis=-1) if op == "group_norm"
                        else fwd(x, None, None, w, b, channel_axis=-1))
            results.append((y,) + getattr(nbn, f"{op}_backward")(dy, saved))
        finally:
            numba.set_num_threads(threads)
    for a, c in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, c)
    y, dx, dw, db = results[-1]
    if dtype == "bfloat16":
        assert_half(y.transpose(0, 3, 1, 2), ref["y"], BF16, name="y")
        assert_half(dx.transpose(0, 3, 1, 2), ref["dx"], BF16, name="dx")
        return
    assert_close(y.transpose(0, 3, 1, 2), ref["y"], dt.type, scale=4.0, name="y")
    assert_close(dx.transpose(0, 3, 1, 2), ref["dx"], dt.type, scale=8.0, name="dx")
    assert_close(dw, ref["dweight"], dt.type, scale=50.0, name="dweight")
    assert_close(db, ref["dbias"], dt.type, scale=50.0, name="dbias")


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_channels_last_matches_torch(rng):
    """PyTorch channels_last tensors, and our transposed NumPy views, give the same numbers."""
    x = _data(rng, (3, 6, 7, 8), np.float32, mean=2.0)
    w, b = _data(rng, 8, np.float32), _data(rng, 8, np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels_last strides
    assert t.is_contiguous(memory_format=torch.channels_last)
    tw, tb = torch.from_numpy(w), torch.from_numpy(b)
    xv = t.numpy()  # the (N, C, H, W) view of channels-last memory
    pairs = [(nbn.group_norm(xv, 4, w, b), TF.group_norm(t, 4, tw, tb)),
             (nbn.instance_norm(xv, weight=w, bias=b), TF.instance_norm(t, weight=tw, bias=tb)),
             (nbn.batch_norm(xv, None, None, w, b, True),
              TF.batch_norm(t, None, None, tw, tb, True))]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=2e-5, atol=2e-5)


def test_channel_axis_errors(rng):
    x = _data(rng, (2, 3, 4, 5), np.float32)
    with pytest.raises(ValueError, match="channel_axis must be 1 .* or -1"):
        nbn.batch_norm(x, channel_axis=2, training=True)
    with pytest.raises(TypeError, match="channel_axis must be an int"):
        nbn.group_norm(x, 1, channel_axis=1.0)
    with pytest.raises(ValueError, match="weight must have shape \\(5,\\)"):
        nbn.group_norm(x, 1, np.ones(3, np.float32), channel_axis=-1)
    with pytest.raises(ValueError, match="channel_axis must be 1"):
        nbn.GroupNorm(1, 5, channel_axis=0)
    layer = nbn.BatchNorm2d(5, channel_axis=-1)
    y = layer(x)
    np.testing.assert_allclose(y, nbn.batch_norm(x, None, None, training=True, channel_axis=-1))
    assert layer.backward(np.ones_like(x)).shape == x.shape


# ---------------------------------------------------------------------------------------------
# fused residual add + norm

def _add_ref(x, r, L, w, b, dy, dh, centered):
    h = x.astype(np.float64) + r.astype(np.float64)
    if centered:
        ref = oracle.layer_norm(h, L, w, b, 1e-5, dy)
    else:
        ref = oracle.rms_norm(h, L, w, float(np.finfo(np.float32).eps)
                              if x.itemsize <= 4 else None, dy)
    ref["dx"] = ref["dx"] + dh
    return h, ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("centered", [True, False])
@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 300), (70, 33)])
def test_add_norm_matches_oracle(rng, shape, centered, dtype):
    L = shape[-1]
    x, r = _data(rng, shape, dtype, 1.0), _data(rng, shape, dtype, -2.0, 3.0)
    w, b = _data(rng, L, dtype), _data(rng, L, dtype)
    dy, dh = _data(rng, shape, dtype), _data(rng, shape, dtype)
    h_ref, ref = _add_ref(x, r, L, w, b, dy, dh, centered)
    if centered:
        y, h, saved = nbn.add_layer_norm_forward(x, r, L, w, b)
        dx, dres, dw, db = nbn.add_layer_norm_backward(dy, saved, dh)
        assert_close(db, ref["dbias"], dtype, scale=50.0, name="dbias")
    else:
        y, h, saved = nbn.add_rms_norm_forward(x, r, L, w)
        dx, dres, dw = nbn.add_rms_norm_backward(dy, saved, dh)
    assert_close(h, h_ref, dtype, scale=8.0, name="h")
    assert_close(y, ref["y"], dtype, scale=8.0, name="y")
    assert_close(dx, ref["dx"], dtype, scale=16.0, name="dx")
    assert dres is dx
    assert_close(dw, ref["dweight"], dtype, scale=50.0, name="dweight")
    # without dh: the norm's gradient alone
    dx0 = (nbn.add_layer_norm_backward(dy, saved)[0] if centered
           else nbn.add_rms_norm_backward(dy, saved)[0])
    assert_close(dx0, ref["dx"] - dh, dtype, scale=16.0, name="dx without dh")


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_add_norm_matches_torch(rng):
    x, r = _data(rng, (6, 64), np.float32), _data(rng, (6, 64), np.float32)
    w, b = _data(rng, 64, np.float32), _data(rng, 64, np.float32)
    tx, tr = torch.from_numpy(x).requires_grad_(), torch.from_numpy(r).requires_grad_()
    th = tx + tr
    ty = TF.layer_norm(th, (64,), torch.from_numpy(w), torch.from_numpy(b))
    y, h = nbn.add_layer_norm(x, r, 64, w, b)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    ty2 = TF.rms_norm(th, (64,), torch.from_numpy(w))
    np.testing.assert_allclose(nbn.add_rms_norm(x, r, 64, w)[0], ty2.detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_add_norm_in_place_half_and_errors(rng):
    x, r = _data(rng, (5, 40), np.float32), _data(rng, (5, 40), np.float32)
    y_ref, h_ref = nbn.add_layer_norm(x, r, 40)
    xi, ri = x.copy(), r.copy()
    y, h = nbn.add_layer_norm(xi, ri, 40, out=xi, residual_out=ri)
    assert y is xi and h is ri
    np.testing.assert_array_equal(xi, y_ref)
    np.testing.assert_array_equal(ri, h_ref)
    with pytest.raises(ValueError, match="out overlaps x"):
        nbn.add_layer_norm_forward(x, r, 40, out=x)
    with pytest.raises(ValueError, match="out and residual_out overlap"):
        buf = np.empty_like(x)
        nbn.add_layer_norm(x, r, 40, out=buf, residual_out=buf)
    with pytest.raises(ValueError, match="residual must have x's shape"):
        nbn.add_layer_norm(x, r[:, :20], 40)
    with pytest.raises(TypeError, match="residual must have dtype float32"):
        nbn.add_layer_norm(x, r.astype(np.float64), 40)
    with pytest.raises(ValueError, match="residual_dtype must be float32"):
        nbn.add_layer_norm(x, r, 40, residual_dtype=np.float64)
    if BF16 is None:
        return
    xb, rb = x.astype(BF16), r.astype(BF16)
    dy = _data(rng, (5, 40), np.float32).astype(BF16)
    h64 = xb.astype(np.float64) + rb.astype(np.float64)
    ref = oracle.layer_norm(h64, 40, None, None, 1e-5, dy.astype(np.float64))
    for rdt in (None, np.float32):
        y, h, saved = nbn.add_layer_norm_forward(xb, rb, 40, residual_dtype=rdt)
        assert h.dtype == (BF16 if rdt is None else np.float32)
        assert_half(y, ref["y"], BF16, name="y")  # statistics of the unrounded sum
        dx, dres, _, _ = nbn.add_layer_norm_backward(dy, saved)
        assert_half(dx, ref["dx"], BF16, name="dx")
        assert dres is dx
    y, h, saved = nbn.add_layer_norm_forward(xb, rb.astype(np.float32), 40,
                                            residual_dtype=np.float32)
    dx, dres, _, _ = nbn.add_layer_norm_backward(dy, saved, np.zeros((5, 40), np.float32))
    assert dres.dtype == np.float32 and dx.dtype == BF16
    np.testing.assert_allclose(dres, ref["dx"], rtol=1e-4, atol=1e-4)


def test_channel_axis_on_dask(rng):
    """Dask arrays with channel_axis=-1: lazily transposed to channels-first, the NumPy result
    within rounding; the fused add refuses them."""
    da = pytest.importorskip("dask.array")
    x = _data(rng, (4, 6, 5, 8), np.float32)
    d = da.from_array(x, chunks=(2, 6, 5, 8))
    y = nbn.group_norm(d, 4, channel_axis=-1)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.compute(), nbn.group_norm(x, 4, channel_axis=-1), rtol=1e-6,
                               atol=1e-6)
    with pytest.raises(TypeError, match="not Dask ones"):
        nbn.add_layer_norm(d, d, 8)


@pytest.mark.parametrize("shape", [(3, 5, 4, 8), (1, 48, 48, 16)])  # one image, split
def test_channels_last_huge_float64(rng, shape):
    """float64 |x| ~ 1e300 channels-last: squares beyond float64 are rescaled (the forward
    redoes such images on the rows kernels), the backward's sums are of xhat: finite, right."""
    x = rng.standard_normal(shape) * 1e300
    dy = rng.standard_normal(x.shape)
    ref = oracle.group_norm(x.transpose(0, 3, 1, 2) / 1e300, 4, None, None, 0.0,
                            dy.transpose(0, 3, 1, 2))
    y, saved = nbn.group_norm_forward(x, 4, eps=0.0, channel_axis=-1)
    dx = nbn.group_norm_backward(dy, saved)[0]
    assert_close(y.transpose(0, 3, 1, 2), ref["y"], np.float64, scale=4.0, name="y")
    np.testing.assert_allclose(dx.transpose(0, 3, 1, 2) * 1e300, ref["dx"], rtol=1e-10,
                               atol=1e-12 * np.abs(ref["dx"]).max())


def test_fused_add_layers(rng):
    """LayerNorm / RMSNorm called with a residual: (y, h) as the functional fused op, backward
    (dx, dresidual) with dh, parameter gradients set; without a residual, the plain norm."""
    x, r = _data(rng, (6, 32), np.float32), _data(rng, (6, 32), np.float32)
    dy, dh = _data(rng, (6, 32), np.float32), _data(rng, (6, 32), np.float32)
    for layer, fwd, bwd in ((nbn.LayerNorm(32), nbn.add_layer_norm_forward,
                             nbn.add_layer_norm_backward),
                            (nbn.RMSNorm(32), nbn.add_rms_norm_forward, nbn.add_rms_norm_backward)):
        params = (layer.weight, layer.bias) if isinstance(layer, nbn.LayerNorm) else (layer.weight,)
        y, h = layer(x, r)
        y0, h0, saved = fwd(x, r, 32, *params)
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(h, h0)
        dx, dres = layer.backward(dy, dh)
        grads = bwd(dy, saved, dh)
        np.testing.assert_array_equal(dx, grads[0])
        np.testing.assert_array_equal(layer.grad_weight, grads[2])
        y_plain = layer(x)
        np.testing.assert_allclose(layer.backward(dy), nbn.layer_norm_backward(
            dy, nbn.layer_norm_forward(x, 32)[1])[0] if isinstance(layer, nbn.LayerNorm)
            else nbn.rms_norm_backward(dy, nbn.rms_norm_forward(x, 32)[1])[0], rtol=1e-6,
            atol=1e-6)
        assert y_plain.shape == x.shape
        with pytest.raises(ValueError, match="dh is the gradient of h"):
            layer.backward(dy, dh)
