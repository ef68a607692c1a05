"""The CUDA path: every op forward and backward against the float64 oracle and against the CPU
path, dispatch and interop, running buffers, robustness. Runs on a real GPU when one is present,
else in Numba's CUDA simulator (see conftest.py: small blocks, so the multi-block reductions
and partial merges run on these tiny shapes)."""
import numpy as np
import pytest

import numbanorm as nbn
from numbanorm import _device
from conftest import (ACCEPTED, EPS32, TOLERANCES, assert_close, assert_half, dx_scale,
                      half_params, ulp16)
import oracle

cuda = _device.cuda()  # the simulator stands in when there is no GPU
DTYPES = [np.float32, np.float64]


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return None if a is None else a.copy_to_host()


def _data(rng, shape, dtype, mean=0.0, std=1.0):
    return (rng.standard_normal(shape) * std + mean).astype(dtype)


# op -> (forward on device args, backward, oracle, parameter shape of x)
CASES = {
    "layer_norm": ((3, 4, 5), lambda x, w, b: nbn.layer_norm_forward(x, (4, 5), w, b),
                   nbn.layer_norm_backward,
                   lambda x, w, b, dy: oracle.layer_norm(x, (4, 5), w, b, 1e-5, dy), (4, 5)),
    "layer_norm_long": ((2, 37), lambda x, w, b: nbn.layer_norm_forward(x, 37, w, b),
                        nbn.layer_norm_backward,
                        lambda x, w, b, dy: oracle.layer_norm(x, 37, w, b, 1e-5, dy), (37,)),
    "rms_norm": ((3, 2, 13), lambda x, w, b: nbn.rms_norm_forward(x, 13, w),
                 nbn.rms_norm_backward,
                 lambda x, w, b, dy: oracle.rms_norm(x, 13, w, None, dy), (13,)),
    "group_norm": ((2, 6, 3, 5), lambda x, w, b: nbn.group_norm_forward(x, 3, w, b),
                   nbn.group_norm_backward,
                   lambda x, w, b, dy: oracle.group_norm(x, 3, w, b, 1e-5, dy), (6,)),
    "instance_norm": ((2, 3, 11), lambda x, w, b: nbn.instance_norm_forward(x, weight=w, bias=b),
                      nbn.instance_norm_backward,
                      lambda x, w, b, dy: oracle.instance_norm(x, w, b, 1e-5, dy), (3,)),
    "batch_norm": ((5, 3, 2, 3), lambda x, w, b: nbn.batch_norm_forward(x, None, None, w, b,
                                                                       training=True),
                   nbn.batch_norm_backward,
                   lambda x, w, b, dy: oracle.batch_norm_train(x, w, b, 1e-5, dy), (3,)),
    "batch_norm_nc": ((13, 7), lambda x, w, b: nbn.batch_norm_forward(x, None, None, w, b,
                                                                     training=True),
                      nbn.batch_norm_backward,
                      lambda x, w, b, dy: oracle.batch_norm_train(x, w, b, 1e-5, dy), (7,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("op", sorted(CASES))
def test_op_matches_oracle_and_cpu(rng, op, dtype, affine):
    shape, fwd, bwd, ref_fn, pshape = CASES[op]
    x = _data(rng, shape, dtype, mean=2.0, std=3.0)
    dy = _data(rng, shape, dtype)
    w = _data(rng, pshape, dtype) if affine else None
    b = _data(rng, pshape, dtype) if affine and op != "rms_norm" else None
    y_d, saved = fwd(dev(x), w if w is None else dev(w), b)  # host bias: copied to the GPU
    grads = bwd(dev(dy), saved)
    ref = ref_fn(x, w, b, dy)
    y = host(y_d)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(host(grads[0]), ref["dx"], dtype, name="dx")
    if w is not None:
        assert_close(host(grads[1]), ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
        assert host(grads[1]).shape == pshape
    else:
        assert grads[1] is None
    if b is not None:
        assert_close(host(grads[2]), ref["dbias"], dtype, np.sqrt(x.size), name="dbias")
    assert_close(host(saved.rstd).ravel(), ref["rstd"].ravel(), dtype, name="rstd")
    # the CPU path on the same data: both accumulate in float64, so within float32 rounding
    y_cpu, saved_cpu = fwd(x, w, b)
    np.testing.assert_allclose(y, y_cpu, rtol=TOLERANCES[dtype][0], atol=TOLERANCES[dtype][1])
    dx_cpu = bwd(dy, saved_cpu)[0]
    np.testing.assert_allclose(host(grads[0]), dx_cpu, rtol=TOLERANCES[dtype][0],
                               atol=TOLERANCES[dtype][1])
    # run to run: bitwise identical
    y2, saved2 = fwd(dev(x), w if w is None else dev(w), b)
    np.testing.assert_array_equal(host(y2), y)
    for g1, g2 in zip(grads, bwd(dev(dy), saved2)):
        if g1 is not None:
            np.testing.assert_array_equal(host(g1), host(g2))


def test_layer_norm_bias_without_weight_keeps_its_shape(rng):
    """A (4, 5) bias with no weight gets a (4, 5) gradient (it came back flattened)."""
    x = _data(rng, (3, 4, 5), np.float32)
    dy = _data(rng, (3, 4, 5), np.float32)
    b = _data(rng, (4, 5), np.float32)
    y, saved = nbn.layer_norm_forward(dev(x), (4, 5), None, dev(b))
    dx, dw, db = nbn.layer_norm_backward(dev(dy), saved)
    ref = oracle.layer_norm(x, (4, 5), None, b, 1e-5, dy)
    assert dw is None and host(db).shape == (4, 5)
    assert_close(host(db), ref["dbias"], np.float32, np.sqrt(x.size), name="dbias")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_running_buffers_on_device_and_eval(rng, dtype):
    x = _data(rng, (6, 4, 5), dtype, mean=1.0, std=2.0)
    dy = _data(rng, x.shape, dtype)
    rm, rv = _data(rng, 4, dtype), np.abs(_data(rng, 4, dtype)) + 0.5
    rm_d, rv_d = dev(rm), dev(rv)
    nbn.batch_norm(dev(x), rm_d, rv_d, training=True, momentum=0.3)
    ref = oracle.batch_norm_train(x)
    assert_close(host(rm_d), 0.7 * rm + 0.3 * ref["mean"], dtype, name="running_mean")
    assert_close(host(rv_d), 0.7 * rv + 0.3 * ref["var_unbiased"], dtype, name="running_var")
    # eval mode reads the (device) running buffers
    y, saved = nbn.batch_norm_forward(dev(x), rm_d, rv_d, training=False)
    dx = nbn.batch_norm_backward(dev(dy), saved)[0]
    ref = oracle.batch_norm_eval(x, host(rm_d), host(rv_d), dy=dy)
    assert_close(host(y), ref["y"], dtype, name="eval y")
    assert_close(host(dx), ref["dx"], dtype, name="eval dx")


@pytest.mark.parametrize("dtype", DTYPES)
def test_instance_norm_running_buffers(rng, dtype):
    x = _data(rng, (3, 4, 9), dtype, mean=-1.0)
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    rm_cpu, rv_cpu = rm.copy(), rv.copy()
    y = nbn.instance_norm(x, rm, rv, momentum=0.5, device="cuda")   # NumPy in, NumPy out
    y_cpu = nbn.instance_norm(x, rm_cpu, rv_cpu, momentum=0.5)
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, y_cpu, rtol=TOLERANCES[dtype][0], atol=TOLERANCES[dtype][1])
    np.testing.assert_allclose(rm, rm_cpu, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rv, rv_cpu, rtol=1e-6, atol=1e-7)
    y_eval = nbn.instance_norm(x, rm, rv, use_input_stats=False, device="cuda")
    ref = oracle.batch_norm_eval(x.reshape(1, 12, 9).reshape(3, 4, 9), rm, rv)
    assert_close(y_eval, ref["y"], dtype, name="eval y")


def test_device_keyword_and_environment(rng, monkeypatch):
    x = _data(rng, (4, 6, 5), np.float32)
    dy = _data(rng, x.shape, np.float32)
    w = _data(rng, 6, np.float32)
    y, saved = nbn.group_norm_forward(x, 2, w, device="cuda")
    assert isinstance(y, np.ndarray) and isinstance(saved.rstd, np.ndarray)
    dx, dw, db = nbn.group_norm_backward(dy, saved)
    assert isinstance(dx, np.ndarray) and db is None
    ref = oracle.group_norm(x, 2, w, dy=dy)
    assert_close(dx, ref["dx"], np.float32, name="dx")
    assert_close(dw, ref["dweight"], np.float32, np.sqrt(x.size), name="dweight")
    monkeypatch.setenv("NUMBANORM_DEVICE", "cuda")
    out = np.empty_like(x)
    assert nbn.group_norm(x, 2, w, out=out) is out
    assert_close(out, ref["y"], np.float32, name="env y")
    monkeypatch.setenv("NUMBANORM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="NUMBANORM_DEVICE environment variable must be"):
        nbn.group_norm(x, 2)


def test_out_on_device(rng):
    x = _data(rng, (5, 8), np.float32)
    ref = oracle.layer_norm(x, 8)["y"]
    x_d = dev(x)
    out = cuda.device_array_like(x_d)
    assert nbn.layer_norm(x_d, 8, out=out) is out
    assert_close(host(out), ref, np.float32, name="out")
    assert nbn.layer_norm(x_d, 8, out=x_d) is x_d  # in place
    assert_close(host(x_d), ref, np.float32, name="in place")
    with pytest.raises(ValueError, match="out overlaps the input"):
        nbn.layer_norm_forward(x_d, 8, out=x_d)
    with pytest.raises(TypeError, match="out must be a GPU array"):
        nbn.layer_norm(x_d, 8, out=np.empty_like(x))


@pytest.mark.parametrize("op", ["layer_norm", "batch_norm"])
def test_dx_out_on_device_and_host(rng, op):
    """dx_out= on the GPU path: a device array for device data, a NumPy array for NumPy data
    sent with device='cuda'; the values are the oracle's."""
    shape, fwd, bwd, ref_fn, pshape = CASES[op]
    x = _data(rng, shape, np.float32)
    dy = _data(rng, shape, np.float32)
    ref = ref_fn(x, None, None, dy)["dx"]
    _, saved = fwd(dev(x), None, None)
    dy_d = dev(dy)
    dx_d = cuda.device_array_like(dy_d)
    assert bwd(dy_d, saved, dx_out=dx_d)[0] is dx_d
    assert_close(host(dx_d), ref, np.float32, name="device dx_out")
    with pytest.raises(ValueError, match="dx_out overlaps dy"):
        bwd(dy_d, saved, dx_out=dy_d)
    with pytest.raises(TypeError, match="dx_out must be a GPU array"):
        bwd(dy_d, saved, dx_out=np.empty_like(dy))
    _, saved_h = (nbn.layer_norm_forward(x, shape[1:], device="cuda") if op == "layer_norm"
                  else nbn.batch_norm_forward(x, training=True, device="cuda"))
    dx_h = np.full(shape, np.nan, np.float32)
    assert bwd(dy, saved_h, dx_out=dx_h)[0] is dx_h
    assert_close(dx_h, ref, np.float32, name="host dx_out")


@pytest.mark.parametrize("op", ["layer_norm", "batch_norm"])
def test_out_and_dx_out_written_in_place_on_device(rng, monkeypatch, op):
    """With a GPU out= or dx_out=, the kernel writes there: no device array of the data's size
    is allocated and copied over (one pass over memory, not two). In place (out=x) too."""
    from numbanorm.cuda import _host
    shape, fwd, bwd, ref_fn, pshape = CASES[op]
    x = _data(rng, shape, np.float32)
    dy = _data(rng, shape, np.float32)
    ref = ref_fn(x, None, None, dy)
    plain = {"layer_norm": lambda a, **k: nbn.layer_norm(a, shape[1:], **k),
             "batch_norm": lambda a, **k: nbn.batch_norm(a, training=True, **k)}[op]
    sizes = []
    real_empty = _host.empty

    def counting_empty(shape_, dtype):
        sizes.append(int(np.prod(shape_)))
        return real_empty(shape_, dtype)
    x_d, dy_d = dev(x), dev(dy)
    out, dx_out = cuda.device_array_like(x_d), cuda.device_array_like(x_d)
    _, saved = fwd(x_d, None, None)
    monkeypatch.setattr(_host, "empty", counting_empty)
    assert plain(x_d, out=out) is out
    assert bwd(dy_d, saved, dx_out=dx_out)[0] is dx_out
    inplace = dev(x)
    assert plain(inplace, out=inplace) is inplace
    assert x.size not in sizes
    assert_close(host(out), ref["y"], np.float32, name="y")
    assert_close(host(dx_out), ref["dx"], np.float32, name="dx")
    assert_close(host(inplace), ref["y"], np.float32, name="in place")


def test_mixed_placement_errors(rng):
    x = _data(rng, (4, 3, 5), np.float32)
    x_d = dev(x)
    w_d = dev(np.ones(3, np.float32))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="weight is on the GPU but x is a NumPy array"):
        nbn.batch_norm(x, None, None, w_d, training=True)
    with pytest.raises(ValueError, match="running_mean is a NumPy array but x is on the GPU"):
        nbn.batch_norm(x_d, rm, rv, training=True)
    np.testing.assert_array_equal(rm, 0)
    nbn.batch_norm(x_d, rm, rv, training=False)  # read-only host buffers are copied over
    with pytest.raises(ValueError, match="device='cpu' was asked for"):
        nbn.layer_norm(x_d, 5, device="cpu")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        nbn.layer_norm(x, 5, device="gpu")
    y, saved = nbn.layer_norm_forward(x_d, 5)
    with pytest.raises(ValueError, match="dy is a NumPy array but the forward ran on the GPU"):
        nbn.layer_norm_backward(np.ones_like(x), saved)
    y, saved = nbn.layer_norm_forward(x, 5)
    with pytest.raises(ValueError, match="dy is on the GPU but the forward ran on the CPU"):
        nbn.layer_norm_backward(dev(np.ones_like(x)), saved)
    with pytest.raises(TypeError, match="x must have dtype " + ACCEPTED):
        nbn.layer_norm(dev(np.ones((2, 3), np.int32)), 3)


@pytest.mark.parametrize("op", ["layer_norm", "group_norm", "batch_norm", "batch_norm_nc"])
def test_huge_magnitudes_float64(rng, op):
    shape, fwd, bwd, ref_fn, _ = CASES[op]
    scale = 1e300
    x = _data(rng, shape, np.float64) * scale
    dy = _data(rng, shape, np.float64)
    y, saved = fwd(dev(x), None, None)
    dx = host(bwd(dev(dy), saved)[0])
    ref = ref_fn(x / scale, None, None, dy)
    np.testing.assert_allclose(host(y), ref["y"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx * scale, ref["dx"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("L", [1, 2, 3, 7, 16, 33])
def test_short_rows_share_a_block(rng, L):
    """Rows short enough that several share a block (L <= 16: groups of 1-4 threads under the
    test's 8-thread blocks; L = 33 takes the whole block), with a last block only partly
    filled, against the oracle; one row of |x| ~ 1e300 (its squares overflow: reduced again,
    scaled, by its group alone, its neighbours unchanged) and one row holding NaN in the same
    block."""
    from numbanorm.cuda import _host
    assert (_host._row_width(L) < _host.CUDA_THREADS) == (L <= 16)
    R = 11
    x = _data(rng, (R, L), np.float64, mean=1.0)
    dy = _data(rng, (R, L), np.float64)
    w = _data(rng, L, np.float64)
    scale = 1e300
    x[3] *= scale
    x[5, L // 2] = np.nan
    normal = [r for r in range(R) if r not in (3, 5)]
    y, saved = nbn.layer_norm_forward(dev(x), L, dev(w))
    dx = host(nbn.layer_norm_backward(dev(dy), saved)[0])
    y = host(y)
    ref = oracle.layer_norm(x[normal], L, w, None, 1e-5, dy[normal])
    assert_close(y[normal], ref["y"], np.float64, name="y")
    assert_close(dx[normal], ref["dx"], np.float64, name="dx")
    if L > 1:  # eps is negligible against the variance of x/scale ~ 1
        ref3 = oracle.layer_norm(x[3:4] / scale, L, w, None, 0.0, dy[3:4])
        np.testing.assert_allclose(y[3:4], ref3["y"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dx[3:4] * scale, ref3["dx"], rtol=1e-9, atol=1e-9)
    else:  # one value: xhat = 0, so y = bias = 0 and dx = 0, as for any row of one value
        assert y[3, 0] == 0.0 and dx[3, 0] == 0.0
    assert np.isnan(y[5]).all()


SPLIT_CASES = {
    "layer_norm": ((3, 37), lambda x, w, b: nbn.layer_norm_forward(x, 37, w, b),
                   nbn.layer_norm_backward,
                   lambda x, w, b, dy: oracle.layer_norm(x, 37, w, b, 1e-5, dy), (37,)),
    "rms_norm": ((2, 40), lambda x, w, b: nbn.rms_norm_forward(x, 40, w), nbn.rms_norm_backward,
                 lambda x, w, b, dy: oracle.rms_norm(x, 40, w, None, dy), (40,)),
    "group_norm": ((1, 6, 3, 5), lambda x, w, b: nbn.group_norm_forward(x, 3, w, b),
                   nbn.group_norm_backward,
                   lambda x, w, b, dy: oracle.group_norm(x, 3, w, b, 1e-5, dy), (6,)),
    "instance_norm": ((1, 3, 20), lambda x, w, b: nbn.instance_norm_forward(x, weight=w, bias=b),
                      nbn.instance_norm_backward,
                      lambda x, w, b, dy: oracle.instance_norm(x, w, b, 1e-5, dy), (3,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(SPLIT_CASES))
def test_split_rows(rng, monkeypatch, op, dtype):
    """Few long rows cut into chunks of a block each (chunks of >= 4 values here), forward and
    backward against the oracle."""
    from numbanorm.cuda import _host
    monkeypatch.setattr(_host, "CUDA_ROW_CHUNK", 4)
    monkeypatch.setattr(_host, "CUDA_TARGET_BLOCKS", 32)
    shape, fwd, bwd, ref_fn, pshape = SPLIT_CASES[op]
    R = {"layer_norm": 3, "rms_norm": 2, "group_norm": 3, "instance_norm": 3}[op]
    assert _host._row_chunks(R, int(np.prod(shape)) // R) > 1  # the split path runs
    x = _data(rng, shape, dtype, mean=2.0)
    dy = _data(rng, shape, dtype)
    w = _data(rng, pshape, dtype)
    b = _data(rng, pshape, dtype)
    ref = ref_fn(x, w, b, dy)
    y, saved = fwd(dev(x), dev(w), dev(b))
    grads = bwd(dev(dy), saved)
    assert_close(host(y), ref["y"], dtype, name="y")
    assert_close(host(grads[0]), ref["dx"], dtype, name="dx")
    assert_close(host(grads[1]), ref["dweight"], dtype, np.sqrt(x.size), name="dweight")


def test_split_rows_huge_and_nan(rng, monkeypatch):
    """In split rows, a row of |x| ~ 1e300 (its chunks' squares overflow: the row is reduced
    again, whole, scaled) and a row holding NaN leave their neighbours exact."""
    from numbanorm.cuda import _host
    monkeypatch.setattr(_host, "CUDA_ROW_CHUNK", 4)
    monkeypatch.setattr(_host, "CUDA_TARGET_BLOCKS", 32)
    x = _data(rng, (3, 37), np.float64, mean=1.0)
    dy = _data(rng, (3, 37), np.float64)
    scale = 1e300
    x[0] *= scale
    x[1, 5] = np.nan
    y, saved = nbn.layer_norm_forward(dev(x), 37)
    dx = host(nbn.layer_norm_backward(dev(dy), saved)[0])
    y = host(y)
    ref0 = oracle.layer_norm(x[:1] / scale, 37, None, None, 0.0, dy[:1])
    np.testing.assert_allclose(y[:1], ref0["y"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dx[:1] * scale, ref0["dx"], rtol=1e-9, atol=1e-9)
    assert np.isnan(y[1]).all()
    ref2 = oracle.layer_norm(x[2:], 37, None, None, 1e-5, dy[2:])
    assert_close(y[2:], ref2["y"], np.float64, name="y")
    assert_close(dx[2:], ref2["dx"], np.float64, name="dx")


@pytest.mark.parametrize("op", ["layer_norm", "group_norm", "batch_norm_nc"])
def test_float32_large_mean(rng, op):
    shape, fwd, bwd, ref_fn, _ = CASES[op]
    x = (rng.standard_normal(shape) + 1e6).astype(np.float32)
    y, saved = fwd(dev(x), None, None)
    ref = ref_fn(x, None, None, None)
    var = 1.0 / host(saved.rstd).astype(np.float64).ravel() ** 2 - 1e-5
    np.testing.assert_allclose(var, ref["var"].ravel(), rtol=1e-5)
    np.testing.assert_allclose(host(y), ref["y"], rtol=1e-5, atol=2e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_constant_groups(rng):
    x = _data(rng, (2, 4, 6), np.float32)
    x[0, :2, 3] = np.nan          # group 0 of sample 0
    x[1, 2:] = 5.0                # group 1 of sample 1: constant
    b = _data(rng, 4, np.float32)
    y = host(nbn.group_norm(dev(x), 2, None, b))
    assert np.isnan(y[0, :2]).all()
    assert np.isfinite(y[0, 2:]).all() and np.isfinite(y[1]).all()
    np.testing.assert_array_equal(y[1, 2:], np.broadcast_to(b[2:, None], (2, 6)))
    ref = oracle.group_norm(x[:, :, :], 2, None, b)["y"]
    assert_close(y[0, 2:], ref[0, 2:], np.float32)


def test_cuda_unavailable_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(_device, "_state", {})
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(_device.CudaUnavailableError, match="needs an NVIDIA GPU"):
        nbn.layer_norm(np.ones((2, 3), np.float32), 3, device="cuda")
    np.testing.assert_allclose(nbn.layer_norm(np.ones((2, 3), np.float32) * [1, 2, 3], 3)[0],
                               [-1.2247, 0, 1.2247], atol=1e-4)  # the CPU path still works
    assert nbn.info()["gpu"] is None


def test_info_reports_gpu():
    facts = nbn.info()
    assert facts["gpu"] and facts["numba"] and facts["threads"] >= 1


def _real_gpu():
    return not _device._simulated()


@pytest.mark.skipif(not _real_gpu(), reason="CuPy and PyTorch CUDA tensors need a real GPU")
def test_cupy_and_torch_interop(rng):
    x = _data(rng, (8, 16), np.float32)
    ref = oracle.layer_norm(x, 16)["y"]
    cupy = pytest.importorskip("cupy")
    y = nbn.layer_norm(cupy.asarray(x), 16)
    assert isinstance(y, cupy.ndarray)
    assert_close(cupy.asnumpy(y), ref, np.float32)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        y = nbn.layer_norm(torch.tensor(x, device="cuda"), 16)
        assert isinstance(y, torch.Tensor) and y.is_cuda
        assert_close(y.cpu().numpy(), ref, np.float32)


LAYERS = [
    (nbn.BatchNorm2d, (4,), (3, 4, 2, 3)), (nbn.BatchNorm1d, (5,), (7, 5)),
    (nbn.InstanceNorm1d, (3,), (3, 6)),  # unbatched (C, L)
    (nbn.InstanceNorm2d, (3,), (2, 3, 2, 3)), (nbn.LayerNorm, ((2, 3),), (4, 2, 3)),
    (nbn.GroupNorm, (2, 4), (2, 4, 5)), (nbn.RMSNorm, (6,), (3, 6)),
]


@pytest.mark.parametrize("cls,args,shape", LAYERS, ids=lambda v: getattr(v, "__name__", ""))
def test_layers_on_device_match_cpu(rng, cls, args, shape):
    """A layer moved with .to("cuda") gives the CPU layer's outputs, gradients and running
    buffers over train and eval steps, and .to("cpu") brings its state back."""
    kwargs = {"track_running_stats": True, "affine": True} if cls in (
        nbn.InstanceNorm1d, nbn.InstanceNorm2d) else {}
    cpu_layer, gpu_layer = cls(*args, **kwargs), cls(*args, **kwargs).to("cuda")
    assert gpu_layer.device == "cuda"
    for step in range(3):
        if step == 2:
            cpu_layer.eval()
            gpu_layer.eval()
        x = _data(rng, shape, np.float32, mean=step, std=2.0)
        dy = _data(rng, shape, np.float32)
        y_cpu = cpu_layer(x)
        y_gpu = host(gpu_layer(dev(x)))
        np.testing.assert_allclose(y_gpu, y_cpu, rtol=2e-6, atol=2e-6)
        dx_cpu = cpu_layer.backward(dy)
        dx_gpu = host(gpu_layer.backward(dev(dy)))
        np.testing.assert_allclose(dx_gpu, dx_cpu, rtol=2e-6, atol=2e-6)
        if cpu_layer.grad_weight is not None:
            np.testing.assert_allclose(host(gpu_layer.grad_weight), cpu_layer.grad_weight,
                                       rtol=2e-6, atol=1e-5)
    state_cpu, state_gpu = cpu_layer.state_dict(), gpu_layer.state_dict()
    for key in state_cpu:
        np.testing.assert_allclose(state_gpu[key], state_cpu[key], rtol=2e-6, atol=1e-7)
    gpu_layer.load_state_dict(state_cpu)
    back = gpu_layer.to("cpu")
    assert back.device == "cpu"
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value, state_cpu[key])


def test_warp_exchanges_follow_the_shuffle_semantics():
    """The reductions' lane exchanges (cuda._reduce._down*, _from*): real shuffles on a GPU,
    shared-memory stand-ins in the simulator. Both must give lane t the value of lane t + delta
    of its warp (its own past the warp's or the block's end) and the value of lane src."""
    from numba import float64
    from numbanorm.cuda import _reduce as R

    T = R.THREADS

    @cuda.jit
    def kernel(delta, src, down, down3, frm):
        s1 = cuda.shared.array(T, float64)
        s2 = cuda.shared.array(T, float64)
        s3 = cuda.shared.array(T, float64)
        t = cuda.threadIdx.x
        v = float64(t)
        down[t] = R._down(s1, v, delta)
        a, b, c = R._down3(s1, s2, s3, v, -v, 2.0 * v, delta)
        down3[t, 0] = a
        down3[t, 1] = b
        down3[t, 2] = c
        frm[t] = R._from2(s1, s2, v, v, src)[1]

    lanes = min(T, 32)
    for delta in (1, 2, 4, 16):
        for src in (0, lanes - 1):
            down, down3, frm = (cuda.device_array(s) for s in ((T,), (T, 3), (T,)))
            kernel[1, T](delta, src, down, down3, frm)
            t = np.arange(T)
            want = np.where((t % 32) + delta < lanes, t + delta, t).astype(float)
            np.testing.assert_array_equal(down.copy_to_host(), want)
            np.testing.assert_array_equal(down3.copy_to_host(),
                                          np.stack([want, -want, 2 * want], axis=1))
            np.testing.assert_array_equal(frm.copy_to_host(), t - t % 32 + src)


def test_numpy_layer_on_gpu_input_says_to_move_the_layer(rng):
    """A layer's user cannot pass buffers: the error names layer.to('cuda'), which works."""
    layer = nbn.BatchNorm1d(4)
    x = dev(_data(rng, (6, 4), np.float32))
    with pytest.raises(ValueError, match=r"layer\.to\('cuda'\)"):
        layer(x)
    y = host(layer.to("cuda")(x))
    ref = oracle.batch_norm_train(host(x))
    assert_close(y, ref["y"], np.float32, name="y")


@pytest.mark.parametrize("name,args", [("BatchNorm2d", (4,)), ("GroupNorm", (2, 4)),
                                       ("InstanceNorm2d", (4,)), ("LayerNorm", (5,)),
                                       ("RMSNorm", (5,))])
def test_device_cuda_in_constructor_is_to_cuda(rng, name, args):
    layer = getattr(nbn, name)(*args, device="cuda")
    assert layer.device == "cuda"
    x = _data(rng, (3, 4, 2, 5), np.float32)
    y = host(layer(dev(x)))
    np.testing.assert_allclose(y, getattr(nbn, name)(*args)(x), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op", sorted(CASES))
def test_empty_batch_gradients_are_zero(rng, op):
    """On the GPU as on the CPU: dweight and dbias of an empty batch are exactly 0."""
    shape, fwd, bwd, _, pshape = CASES[op]
    w = _data(rng, pshape, np.float32)
    b = _data(rng, pshape, np.float32)
    x = np.zeros((0,) + shape[1:], np.float32)
    _, saved = fwd(dev(_data(rng, shape, np.float32)), dev(w), dev(b))
    bwd(dev(_data(rng, shape, np.float32)), saved)
    y, saved = fwd(dev(x), dev(w), dev(b))
    grads = bwd(dev(x), saved)
    assert host(y).shape == x.shape and host(grads[0]).shape == x.shape
    for g in grads[1:]:
        if g is not None:
            np.testing.assert_array_equal(host(g), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((5, 37), 1), ((5, 3, 7), (1, 2)), ((37, 5), 0),
                                        ((6, 4, 3), (0, 1)), ((3, 41), -1)])
def test_zscore_on_device(rng, shape, axis, dtype):
    """zscore of device data: trailing axes on the rows kernels, leading axes on the column
    kernels; forward and backward as the CPU path gives them, constant slices NaN."""
    x = _data(rng, shape, dtype, mean=3.0, std=2.0)
    leading = axis in (0, (0, 1))
    axes = (axis,) if np.isscalar(axis) else axis
    n = int(np.prod([shape[a] for a in axes]))
    if leading:
        x.reshape(n, -1)[:, 1] = 1.5  # a constant column: NaN
    else:
        x.reshape(-1, n)[1] = 1.5  # a constant row: NaN
    dy = _data(rng, shape, dtype)
    # ddof=1 through forward and backward, ddof=0 against the oracle (the simulator is slow:
    # every launch runs its threads in Python)
    y_d, saved = nbn.zscore_forward(dev(x), axis, 1)
    y_cpu, saved_cpu = nbn.zscore_forward(x, axis, 1)
    np.testing.assert_allclose(host(y_d), y_cpu, equal_nan=True,
                               rtol=TOLERANCES[dtype][0], atol=TOLERANCES[dtype][1])
    assert np.isnan(host(y_d)).sum() == np.isnan(y_cpu).sum() > 0
    dx = host(nbn.zscore_backward(dev(dy), saved))
    dx_cpu = nbn.zscore_backward(dy, saved_cpu)
    ok = np.isfinite(dx_cpu)
    np.testing.assert_allclose(dx[ok], dx_cpu[ok], rtol=1e-5 if dtype == np.float32 else
                               1e-11, atol=1e-5 if dtype == np.float32 else 1e-11)
    assert_close(host(nbn.zscore(dev(x), axis)), oracle.zscore(x, axis), dtype)


# (shape, axes): trailing (rows), leading (columns), kept-reduced-kept (columns, A > 1), both
# ends (slabs), interleaved (one copy on the device), everything
DATA_CASES = [((5, 11), 1), ((9, 4), 0), ((3, 7, 4), 1), ((4, 3, 5), (0, 2)),
              ((3, 4, 5, 2), (0, 2)), ((6, 7), None)]


# (float32 on two layouts only: the simulator is slow, and the layouts do not depend on dtype)
@pytest.mark.parametrize("shape,axis,dtype", [c + (np.float64,) for c in DATA_CASES]
                         + [c + (np.float32,) for c in DATA_CASES[2:4]])
def test_data_family_on_device(rng, shape, axis, dtype):
    """zscore (both NaN policies), minmax_scale, normalize (p = 1, 2, 3.5, inf) and moments of
    device data along any axes: the oracle's numbers and the CPU path's, a GPU array back."""
    x = _data(rng, shape, dtype, mean=3.0, std=2.0)
    x.flat[4] = np.nan
    d = dev(x)
    for omit in (False, True):
        policy = "omit" if omit else "propagate"
        z = nbn.zscore(d, axis, nan_policy=policy)
        assert _device.is_device_array(z)
        assert_close(host(z), oracle.zscore(x, axis, omit=omit), dtype, name=policy)
        m, m_cpu = nbn.moments(d, axis, policy), nbn.moments(x, axis, policy)
        for f in ("count", "mean", "m2", "min", "max"):
            np.testing.assert_allclose(getattr(m, f), getattr(m_cpu, f), rtol=1e-12,
                                       equal_nan=True, err_msg=f)
    assert_close(host(nbn.minmax_scale(d, axis=axis)), oracle.minmax_scale(x, axis=axis), dtype)
    dim = tuple(range(len(shape))) if axis is None else axis
    clean = dev(np.nan_to_num(x))
    for p in (1.0, 2.0, 3.5, np.inf):
        assert_close(host(nbn.normalize(clean, p, dim)),
                     oracle.normalize(np.nan_to_num(x), p, dim), dtype, name=str(p))


def test_data_family_device_keyword_out_raise_and_backward(rng):
    """device='cuda' sends NumPy data over and returns NumPy; out= on the device is written in
    place; nan_policy='raise' raises; the backward passes' kernels match the CPU's
    expressions (every geometry: rows, columns, slabs, interleaved; NaN, ties at the min and
    max, every p)."""
    x = _data(rng, (6, 4, 5), np.float64, mean=1.0, std=3.0)
    dy = _data(rng, x.shape, np.float64)
    y = nbn.zscore(x, (0, 2), device="cuda")
    assert isinstance(y, np.ndarray)
    assert_close(y, oracle.zscore(x, (0, 2)), np.float64)
    out = dev(np.zeros_like(x))
    assert nbn.minmax_scale(dev(x), axis=1, out=out) is out
    assert_close(host(out), oracle.minmax_scale(x, axis=1), np.float64)
    bad = x.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="nan values"):
        nbn.zscore(dev(bad), 0, nan_policy="raise")
    x4 = np.round(_data(rng, (3, 4, 5, 2), np.float64), 1)  # ties at the min and max
    x4[0, 1, 2, 1] = np.nan
    dy4 = _data(rng, x4.shape, np.float64)
    z, zb = nbn.zscore_forward, nbn.zscore_backward
    mm, mb = nbn.minmax_scale_forward, nbn.minmax_scale_backward
    no, nb = nbn.normalize_forward, nbn.normalize_backward
    for fwd, bwd, args, a, g in (
            (mm, mb, {"axis": 1}, x, dy), (mm, mb, {"axis": (0, 2)}, x4, dy4),
            (no, nb, {"dim": (0, 2)}, x, dy), (no, nb, {"dim": 1, "p": np.inf}, x4, dy4),
            (no, nb, {"dim": 0, "p": 3.0}, x, dy),
            (no, nb, {"dim": (1, 3), "p": 0.5}, np.nan_to_num(x4), dy4),
            (z, zb, {"axis": (0, 2)}, x, dy), (z, zb, {"axis": (1, 2), "ddof": 1}, x, dy),
            (z, zb, {"axis": 0}, x, dy), (z, zb, {"axis": (0, 2), "nan_policy": "omit"}, x4, dy4),
            (z, zb, {"axis": 3, "nan_policy": "omit"}, x4, dy4)):
        y_d, saved = fwd(dev(a), **args)
        y_c, saved_c = fwd(a, **args)
        assert_close(host(y_d), y_c, np.float64)
        dx = bwd(dev(g), saved)
        assert _device.is_device_array(dx)
        np.testing.assert_allclose(host(dx), bwd(g, saved_c), rtol=1e-10, atol=1e-12,
                                   err_msg=f"{fwd.__name__} {args}")
        with pytest.raises(ValueError, match="NumPy array but the forward ran on the GPU"):
            bwd(g, saved)
    y, saved = z(x, (0, 2), device="cuda")  # NumPy in and out, the backward too
    assert isinstance(zb(dy, saved), np.ndarray)


def test_normalize_on_device_rescales_huge_and_tiny(rng):
    """Slots whose power sums overflow (|x| ~ 1e200) or underflow (~1e-200) are summed again
    scaled by their max |x|, as on the CPU."""
    x = _data(rng, (4, 9), np.float64)
    x[1] *= 1e200
    x[2] *= 1e-200
    for p in (2.0, 3.0):
        np.testing.assert_allclose(host(nbn.normalize(dev(x), p, 1)), nbn.normalize(x, p, 1),
                                   rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# the CUDA kernels (a real GPU when present, else Numba's CUDA simulator): float64 arithmetic
# rounded once to 16 bits

# (one parameter rule per dtype: the simulator runs bfloat16 arithmetic as Python, slowly)
@pytest.mark.parametrize("dtype,params", [("float16", "same"), ("bfloat16", "mixed")])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "group_norm", "instance_norm",
                                "batch_norm", "batch_norm_nc"])
def test_half_matches_oracle_and_cpu(rng, op, dtype, params):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    shape, fwd, bwd, ref_fn, pshape = CASES[op]
    x = _data(rng, shape, dtype, mean=2.0, std=3.0)
    dy = _data(rng, shape, dtype)
    w, b = half_params(rng, int(np.prod(pshape)), dtype, params)
    w, b = w.reshape(pshape), b.reshape(pshape)
    if op == "rms_norm":
        b = None
    y_d, saved = fwd(dev(x), dev(w), b)  # a host bias is copied over
    grads = bwd(dev(dy), saved)
    # (x's values in float32: the oracle's default rms eps is then float32's, as ours)
    ref = ref_fn(x.astype(np.float32), w, b, dy)
    y, dx = host(y_d), host(grads[0])
    assert_half(y, ref["y"], dtype, name="y")
    assert_half(dx, ref["dx"], dtype, dx_scale(ref, dy, w), name="dx")
    assert host(saved.rstd).dtype == np.float32
    dw = host(grads[1])
    assert dw.dtype == w.dtype and dw.shape == pshape
    scale = np.sqrt(x.size) * np.abs(ref["dweight"]).max()
    if dw.dtype == np.float32:
        assert_close(dw, ref["dweight"], np.float32, np.sqrt(x.size), name="dweight")
    else:
        assert_half(dw, ref["dweight"], dtype, scale, name="dweight")
    # the CPU path on the same data: each within an ulp of the oracle, so within two of each
    # other
    y_cpu, saved_cpu = fwd(x, w, b)
    assert np.all(np.abs(y.astype(np.float64) - y_cpu.astype(np.float64))
                  <= 2 * ulp16(np.abs(ref["y"]), dtype) + 16 * EPS32 * np.abs(ref["y"]).max())


def test_half_zscore_on_device(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    BF16 = np.dtype(ml_dtypes.bfloat16)
    x = _data(rng, (6, 40), BF16, mean=100.0, std=5.0)
    z = host(nbn.zscore(dev(x), axis=1))
    assert z.dtype == BF16
    assert_half(z, oracle.zscore(x, axis=1), BF16, name="zscore")


def test_scalers_on_device(rng):
    """StandardScaler, MinMaxScaler and Normalizer fit and transform GPU X on the device: the
    CPU path's fitted attributes (NumPy) and results (a GPU array back)."""
    x = _data(rng, (40, 6), np.float64, mean=2.0, std=3.0)
    x[3, 2] = np.nan
    for est, data in ((nbn.StandardScaler(), x), (nbn.MinMaxScaler((-1, 2)), x),
                      (nbn.MaxAbsScaler(), x), (nbn.Normalizer("l1"), np.nan_to_num(x)),
                      (nbn.Normalizer("max"), np.nan_to_num(x))):
        ref = type(est)(**est.get_params()).fit(data)
        est.fit(dev(data))
        for attr in ("mean_", "var_", "scale_", "data_min_", "data_max_", "max_abs_",
                     "n_samples_seen_"):
            if hasattr(ref, attr):
                np.testing.assert_allclose(getattr(est, attr), getattr(ref, attr),
                                           rtol=1e-12, err_msg=attr)
        y = est.transform(dev(data))
        assert _device.is_device_array(y)
        assert_close(host(y), ref.transform(data), np.float64, name=type(est).__name__)
        if hasattr(ref, "inverse_transform"):
            assert_close(host(est.inverse_transform(y)), data, np.float64)
    for cls in (nbn.MinMaxScaler, nbn.MaxAbsScaler):
        with pytest.raises(ValueError, match="clip=True"):
            cls(clip=True).fit(x).transform(dev(x))
    with pytest.raises(TypeError, match="sample_weight"):
        nbn.StandardScaler().fit(dev(x), sample_weight=np.ones(40))


# ---------------------------------------------------------------------------------------------
# adaptive normalization and local_response_norm

@pytest.mark.parametrize("dtype", [np.float64])
def test_adaptive_and_window_ops_on_device(rng, dtype):
    """switch_norm (both modes), batch_instance_norm and local_response_norm on device arrays
    against the CPU path and the oracle, forward and backward, running buffers on the
    device. float64 only: its tolerances are the tight ones, and the simulator's float32 run
    cost CI 9.5 s more for the same code path."""
    shape = (3, 4, 2, 5)
    x = _data(rng, shape, dtype, mean=2.0, std=3.0)
    dy = _data(rng, shape, dtype)
    C = shape[1]
    w = _data(rng, C, dtype)
    b = _data(rng, C, dtype)
    mw, vw = rng.standard_normal(3), rng.standard_normal(3)
    for reference in (False, True):
        rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
        rm_d, rv_d = dev(rm), dev(rv)
        y_cpu, s_cpu = nbn.switch_norm_forward(x, mw, vw, rm, rv, w, b, True,
                                              reference=reference)
        y_d, s_d = nbn.switch_norm_forward(dev(x), mw, vw, rm_d, rv_d, dev(w), dev(b), True,
                                          reference=reference)
        ref = oracle.switch_norm(x, mw, vw, None, None, w, b, True, 1e-5, True, reference)
        assert_close(host(y_d), ref["y"], dtype, scale=4.0, name="switch_norm y")
        np.testing.assert_allclose(host(rm_d), rm, rtol=1e-6)
        np.testing.assert_allclose(host(rv_d), rv, rtol=1e-6)
        for ours, cpu in zip(nbn.switch_norm_backward(dev(dy), s_d),
                             nbn.switch_norm_backward(dy, s_cpu)):
            ours = host(ours) if not isinstance(ours, np.ndarray) else ours
            np.testing.assert_allclose(ours, cpu, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                       atol=1e-4 if dtype == np.float32 else 1e-10)
    gate = rng.uniform(0, 1, C).astype(dtype)
    y_d, s_d = nbn.batch_instance_norm_forward(dev(x), dev(gate), None, None, dev(w), dev(b),
                                              True)
    y_cpu, s_cpu = nbn.batch_instance_norm_forward(x, gate, None, None, w, b, True)
    ref = oracle.batch_instance_norm(x, gate, None, None, w, b, True)
    assert_close(host(y_d), ref["y"], dtype, scale=4.0, name="batch_instance_norm y")
    for ours, cpu in zip(nbn.batch_instance_norm_backward(dev(dy), s_d),
                         nbn.batch_instance_norm_backward(dy, s_cpu)):
        np.testing.assert_allclose(host(ours), cpu, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-4 if dtype == np.float32 else 1e-10)
    for size in (1, 3, 6):
        y_d, s_d = nbn.local_response_norm_forward(dev(x), size, 0.2, 0.75, 1.0)
        ref = oracle.local_response_norm(x, size, 0.2, 0.75, 1.0, dy)
        assert_close(host(y_d), ref["y"], dtype, scale=2.0, name="lrn y")
        assert_close(host(nbn.local_response_norm_backward(dev(dy), s_d)), ref["dx"], dtype,
                     scale=4.0, name="lrn dx")
    xd = dev(x)
    nbn.local_response_norm(xd, 3, 0.2, out=xd)  # in place: no thread reads a written value
    assert_close(host(xd), oracle.local_response_norm(x, 3, 0.2)["y"], dtype, scale=2.0)
    y = nbn.local_response_norm(x, 3, 0.2, device="cuda")
    assert isinstance(y, np.ndarray)


def test_channels_last_on_device(rng):
    """channel_axis=-1 on device arrays: batch_norm on the (N*S, C) columns, group and
    instance norm through the device's channels-first copy; forward and backward against the
    CPU path (float64)."""
    x = _data(rng, (2, 3, 4, 6), np.float64, mean=2.0, std=3.0)
    dy = _data(rng, (2, 3, 4, 6), np.float64)
    w, b = _data(rng, 6, np.float64), _data(rng, 6, np.float64)
    for fwd, bwd, args in ((nbn.group_norm_forward, nbn.group_norm_backward, (3, w, b)),
                           (nbn.instance_norm_forward, nbn.instance_norm_backward,
                            (None, None, w, b)),
                           (nbn.batch_norm_forward, nbn.batch_norm_backward,
                            (None, None, w, b, True))):
        y_cpu, s_cpu = fwd(x, *args, channel_axis=-1)
        dev_args = tuple(dev(a) if isinstance(a, np.ndarray) else a for a in args)
        y_d, s_d = fwd(dev(x), *dev_args, channel_axis=-1)
        np.testing.assert_allclose(host(y_d), y_cpu, rtol=1e-10, atol=1e-10)
        for ours, cpu in zip(bwd(dev(dy), s_d), bwd(dy, s_cpu)):
            np.testing.assert_allclose(host(ours), cpu, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_norm_on_device(rng, dtype):
    """add_layer_norm / add_rms_norm on device arrays against the CPU path, forward (y, h) and
    backward with dh; the in-place pattern on the device; NumPy in with device='cuda'."""
    shape = (5, 37)
    x, r = _data(rng, shape, dtype, 1.0), _data(rng, shape, dtype, -2.0, 3.0)
    dy, dh = _data(rng, shape, dtype), _data(rng, shape, dtype)
    w, b = _data(rng, 37, dtype), _data(rng, 37, dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for fwd, bwd, params in ((nbn.add_layer_norm_forward, nbn.add_layer_norm_backward, (w, b)),
                             (nbn.add_rms_norm_forward, nbn.add_rms_norm_backward, (w,))):
        y, h, s = fwd(x, r, 37, *params)
        y_d, h_d, s_d = fwd(dev(x), dev(r), 37, *(dev(p) for p in params))
        np.testing.assert_allclose(host(y_d), y, **tol)
        np.testing.assert_array_equal(host(h_d), h)
        for ours, cpu in zip(bwd(dev(dy), s_d, dev(dh)), bwd(dy, s, dh)):
            np.testing.assert_allclose(host(ours), cpu, **tol)
    xd, rd = dev(x), dev(r)
    y, h = nbn.add_layer_norm(x, r, 37, w, b)
    nbn.add_layer_norm(xd, rd, 37, dev(w), dev(b), out=xd, residual_out=rd)
    np.testing.assert_allclose(host(xd), y, **tol)
    np.testing.assert_array_equal(host(rd), h)
    y2, h2 = nbn.add_layer_norm(x, r, 37, w, b, device="cuda")
    assert isinstance(y2, np.ndarray) and isinstance(h2, np.ndarray)
    np.testing.assert_allclose(y2, y, **tol)
