"""Switchable Normalization, Batch-Instance Normalization (numbanorm.adaptive) and local
response normalization: forward against the float64 NumPy oracle (tests/oracle.py: the
reference codes' forwards transcribed), backward against PyTorch's autograd on float64
transcriptions of the reference modules and against finite differences, the layers' running
buffers and state_dicts, PyTorch 2.13's own OpInfo samples for local_response_norm, and the
errors."""
import numpy as np
import pytest

import numbanorm as nbn
import oracle
from conftest import assert_close

DTYPES = [np.float32, np.float64]
TOL32 = dict(rtol=2e-5, atol=2e-5)


def _mix_len(ndim, using_bn):
    return (3 if using_bn else 2) if ndim > 2 else (2 if using_bn else 1)


def _sn_args(rng, shape, using_bn, dtype):
    C = shape[1]
    K = _mix_len(len(shape), using_bn)
    return dict(mean_weight=rng.standard_normal(K), var_weight=rng.standard_normal(K),
                weight=rng.standard_normal(C).astype(dtype),
                bias=rng.standard_normal(C).astype(dtype),
                running_mean=rng.standard_normal(C).astype(dtype),
                running_var=rng.uniform(0.5, 2.0, C).astype(dtype))


SN_SHAPES = [(4, 6, 5, 7), (3, 5, 9), (9, 5), (2, 3, 2, 3, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SN_SHAPES)
def test_switch_norm_matches_oracle(rng, shape, dtype):
    """Every mode (training/eval, with and without BN, exact/reference) against the oracle,
    and the running buffers a training step leaves (PyTorch's momentum convention)."""
    x = (rng.standard_normal(shape) * 2.0 + 3.0).astype(dtype)
    for training in (True, False):
        for using_bn in (True, False):
            for reference in (False, True):
                a = _sn_args(rng, shape, using_bn, dtype)
                rm, rv = a["running_mean"].copy(), a["running_var"].copy()
                y = nbn.switch_norm(x, a["mean_weight"], a["var_weight"], rm, rv, a["weight"],
                                   a["bias"], training, 0.25, 1e-5, using_bn, reference)
                ref = oracle.switch_norm(x, a["mean_weight"], a["var_weight"],
                                         a["running_mean"], a["running_var"], a["weight"],
                                         a["bias"], training, 1e-5, using_bn, reference)
                name = f"{training=} {using_bn=} {reference=}"
                assert_close(y, ref["y"], dtype, scale=4.0, name=name)
                if training and using_bn:
                    want_m = 0.75 * a["running_mean"].astype(np.float64) + 0.25 * ref["batch_mean"]
                    want_v = 0.75 * a["running_var"].astype(np.float64) + 0.25 * ref["batch_var"]
                    assert_close(rm, want_m, dtype, name=name)
                    assert_close(rv, want_v, dtype, name=name)
                else:  # untouched
                    np.testing.assert_array_equal(rm, a["running_mean"])


def _sn_torch(torch, x, mw, vw, rm, rv, w, b, training, eps, using_bn, reference):
    """The same transcription in torch (float64), for autograd."""
    N, C = x.shape[:2]
    sm, sv = torch.softmax(mw, 0), torch.softmax(vw, 0)
    if x.dim() == 2:
        xs = x
        means = [x.mean(1, keepdim=True)]
        vars_ = [x.var(1, keepdim=True, unbiased=reference)]
        if using_bn:
            means.append(x.mean(0, keepdim=True) if training else rm.reshape(1, C))
            vars_.append(x.var(0, keepdim=True, unbiased=reference) if training
                         else rv.reshape(1, C))
    else:
        xs = x.reshape(N, C, -1)
        mean_in = xs.mean(-1, keepdim=True)
        var_in = xs.var(-1, keepdim=True, unbiased=reference)
        mean_ln = mean_in.mean(1, keepdim=True)
        temp = var_in + mean_in ** 2
        var_ln = (temp.mean(1, keepdim=True) - mean_ln ** 2 if reference
                  else xs.reshape(N, -1).var(1, unbiased=False).reshape(N, 1, 1))
        means, vars_ = [mean_in, mean_ln], [var_in, var_ln]
        if using_bn:
            if training:
                mean_bn = mean_in.mean(0, keepdim=True)
                var_bn = (temp.mean(0, keepdim=True) - mean_bn ** 2 if reference else
                          xs.transpose(0, 1).reshape(C, -1).var(1, unbiased=False)
                          .reshape(1, C, 1))
            else:
                mean_bn, var_bn = rm.reshape(1, C, 1), rv.reshape(1, C, 1)
            means.append(mean_bn)
            vars_.append(var_bn)
    mean = sum(sm[k] * means[k] for k in range(len(means)))
    var = sum(sv[k] * vars_[k] for k in range(len(vars_)))
    y = ((xs - mean) / (var + eps).sqrt()).reshape(x.shape)
    pshape = (1, C) + (1,) * (x.dim() - 2)
    return y * w.reshape(pshape) + b.reshape(pshape)


@pytest.mark.parametrize("shape", SN_SHAPES)
def test_switch_norm_backward_matches_autograd(rng, shape):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 2.0 + 3.0
    dy = rng.standard_normal(shape)
    for training in (True, False):
        for using_bn in (True, False):
            for reference in (False, True):
                a = _sn_args(rng, shape, using_bn, np.float64)
                y, saved = nbn.switch_norm_forward(
                    x, a["mean_weight"], a["var_weight"], a["running_mean"].copy(),
                    a["running_var"].copy(), a["weight"], a["bias"], training, 0.1, 1e-5,
                    using_bn, reference)
                grads = nbn.switch_norm_backward(dy, saved)
                ts = {k: torch.tensor(v, requires_grad=True) for k, v in a.items()}
                xt = torch.tensor(x, requires_grad=True)
                yt = _sn_torch(torch, xt, ts["mean_weight"], ts["var_weight"],
                               ts["running_mean"], ts["running_var"], ts["weight"], ts["bias"],
                               training, 1e-5, using_bn, reference)
                yt.backward(torch.tensor(dy))
                name = f"{training=} {using_bn=} {reference=}"
                np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
                for ours, t, what in zip(grads, (xt, ts["weight"], ts["bias"],
                                                 ts["mean_weight"], ts["var_weight"]),
                                         ("dx", "dweight", "dbias", "dmean_w", "dvar_w")):
                    want = t.grad.numpy()
                    np.testing.assert_allclose(ours, want, rtol=1e-9,
                                               atol=1e-11 * max(1.0, np.abs(want).max()),
                                               err_msg=f"{what} {name}")


def _numeric_grad(f, a, h=1e-6):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        up = f()
        a[i] = old - h
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("reference", [False, True])
def test_switch_norm_and_batch_instance_norm_gradients_by_finite_differences(rng, reference):
    """The backward formulas checked without PyTorch: central differences of sum(y*dy)."""
    shape = (3, 4, 5)
    x = rng.standard_normal(shape) + 1.0
    dy = rng.standard_normal(shape)
    a = _sn_args(rng, shape, True, np.float64)
    mw, vw, w = a["mean_weight"], a["var_weight"], a["weight"]

    def loss():
        return np.sum(nbn.switch_norm(x, mw, vw, None, None, w, a["bias"], True,
                                     reference=reference) * dy)
    y, saved = nbn.switch_norm_forward(x, mw, vw, None, None, w, a["bias"], True,
                                      reference=reference)
    dx, dw, _, dmw, dvw = nbn.switch_norm_backward(dy, saved)
    for ours, arr in ((dx, x), (dw, w), (dmw, mw), (dvw, vw)):
        np.testing.assert_allclose(ours, _numeric_grad(loss, arr), rtol=1e-5, atol=1e-7)
    gate = rng.uniform(0.1, 0.9, shape[1])

    def loss_bin():
        return np.sum(nbn.batch_instance_norm(x, gate, None, None, w, a["bias"], True) * dy)
    _, saved = nbn.batch_instance_norm_forward(x, gate, None, None, w, a["bias"], True)
    dx, dw, _, dgate = nbn.batch_instance_norm_backward(dy, saved)
    for ours, arr in ((dx, x), (dw, w), (dgate, gate)):
        np.testing.assert_allclose(ours, _numeric_grad(loss_bin, arr), rtol=1e-5, atol=1e-7)


def test_switch_norm_statistics_are_exact_where_the_reference_cancels(rng):
    """Data far from 0: the reference's mean(var + mean^2) - mean^2 loses every digit of LN's
    and BN's variance in float64, the exact default keeps them (float64 oracle: two-pass)."""
    x = rng.standard_normal((4, 3, 64)) + 1e8
    mw = np.array([-9.0, 9.0, -9.0])  # LN's statistics
    vw = mw.copy()
    y = nbn.switch_norm(x, mw, vw, training=True)
    ref = oracle.switch_norm(x, mw, vw, training=True)["y"]
    np.testing.assert_allclose(y, ref, rtol=1e-7, atol=1e-7)
    bad = nbn.switch_norm(x, mw, vw, training=True, reference=True)
    assert np.nanmax(np.abs(bad - ref)) > 1e-3  # the reference's numbers are wrong here


def test_switch_norm_layers_load_reference_state_dict_and_average_batches(rng):
    """The reference's keys and shapes load as they are; reference=True then gives the
    reference's numbers. using_moving_average=False: running statistics are the average of
    the batches' (unbiased variance), after any number of batches."""
    C = 3
    layer = nbn.SwitchNorm2d(C, reference=True, dtype=np.float64)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "mean_weight", "var_weight", "running_mean",
                           "running_var"]
    assert state["weight"].shape == (1, C, 1, 1) and state["running_mean"].shape == (1, C, 1)
    trained = {k: rng.standard_normal(v.shape) for k, v in state.items()}
    trained["running_var"] = rng.uniform(0.5, 2.0, (1, C, 1))
    layer.load_state_dict(trained)
    x = rng.standard_normal((4, C, 5, 6))
    layer.eval()
    y = layer(x)
    ref = oracle.switch_norm(x, trained["mean_weight"], trained["var_weight"],
                             trained["running_mean"], trained["running_var"],
                             trained["weight"], trained["bias"], False, 1e-5, True, True)["y"]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    layer.train()
    dx = layer.backward(layer(x) * 0 + 1.0)
    assert dx.shape == x.shape and layer.grad_weight.shape == (1, C, 1, 1)
    assert layer.grad_mean_weight.shape == (3,)

    avg = nbn.SwitchNorm1d(4, using_moving_average=False, dtype=np.float64)
    assert "num_batches_tracked" in avg.state_dict()
    batches = [rng.standard_normal((6, 4)) * (k + 1) for k in range(3)]
    for b in batches:
        avg(b)
    np.testing.assert_allclose(avg.running_mean.ravel(),
                               np.mean([b.mean(0) for b in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(avg.running_var.ravel(),
                               np.mean([b.var(0, ddof=1) for b in batches], axis=0),
                               rtol=1e-12)
    assert avg.num_batches_tracked == 3


def _bin_torch(torch, x, gate, rm, rv, w, b, training, momentum, eps):
    """hyseob/Batch-Instance-Normalization's forward, transcribed."""
    TF = torch.nn.functional
    C = x.shape[1]
    out_bn = TF.batch_norm(x, rm, rv, w * gate, b, training, momentum, eps)
    xi = x.reshape(1, x.shape[0] * C, *x.shape[2:])
    out_in = TF.batch_norm(xi, None, None, None, None, True, momentum, eps).reshape(x.shape)
    return out_bn + out_in * (w * (1 - gate)).reshape((1, C) + (1,) * (x.dim() - 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (3, 5, 9)])
def test_batch_instance_norm_matches_oracle_and_reference(rng, shape, dtype):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2.0 + 3.0).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for training in (True, False):
        gate = rng.uniform(0, 1, C).astype(dtype)
        a = _sn_args(rng, shape, True, dtype)
        rm, rv = a["running_mean"].copy(), a["running_var"].copy()
        y, saved = nbn.batch_instance_norm_forward(x, gate, rm, rv, a["weight"], a["bias"],
                                                  training, 0.1)
        ref = oracle.batch_instance_norm(x, gate, a["running_mean"], a["running_var"],
                                         a["weight"], a["bias"], training)
        assert_close(y, ref["y"], dtype, scale=4.0, name=f"{training=}")
        grads = nbn.batch_instance_norm_backward(dy, saved)
        torch = pytest.importorskip("torch")
        T = {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True)
             for k, v in dict(x=x, gate=gate, w=a["weight"], b=a["bias"]).items()}
        rmt = torch.tensor(a["running_mean"].astype(np.float64))
        rvt = torch.tensor(a["running_var"].astype(np.float64))
        yt = _bin_torch(torch, T["x"], T["gate"], rmt, rvt, T["w"], T["b"], training, 0.1,
                        1e-5)
        yt.backward(torch.tensor(dy.astype(np.float64)))
        tol = TOL32 if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
        for ours, key in zip(grads, ("x", "w", "b", "gate")):
            np.testing.assert_allclose(ours, T[key].grad.numpy(), **tol, err_msg=key)
        np.testing.assert_allclose(rm, rmt.numpy(), **tol)
        np.testing.assert_allclose(rv, rvt.numpy(), **tol)


def test_batch_instance_norm_layer_gate(rng):
    layer = nbn.BatchInstanceNorm2d(3, dtype=np.float64)
    assert list(layer.state_dict()) == ["weight", "bias", "gate", "running_mean",
                                        "running_var", "num_batches_tracked"]
    x = rng.standard_normal((4, 3, 5, 5))
    layer.gate[...] = [1.3, 0.5, -0.2]
    with pytest.raises(ValueError, match=r"gate must lie in \[0, 1\].*such as -?\d.*clamp_gate"):
        layer(x)
    layer.eval()
    layer(x)  # eval mode takes any gate
    layer.train()
    layer.clamp_gate()
    np.testing.assert_array_equal(layer.gate, [1.0, 0.5, 0.0])
    y = layer(x)
    ref = oracle.batch_instance_norm(x, layer.gate, training=True, weight=layer.weight,
                                     bias=layer.bias)["y"]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    layer.backward(np.ones_like(y))
    assert layer.grad_gate.shape == (3,) and layer.num_batches_tracked == 1


# ---------------------------------------------------------------------------------------------
# local_response_norm

LRN_CASES = [((2, 7, 5), 3, 1e-2, 0.75, 1.5), ((3, 10, 4, 5), 5, 1e-4, 0.75, 1.0),
             ((2, 4, 3), 6, 0.3, 0.6, 2.0), ((2, 5, 8), 1, 1.0, 1.0, 0.5),
             ((1, 9, 3, 2, 2), 4, 0.1, 0.5, 1.0), ((2, 3, 33), 2, 0.2, 1.5, 1.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LRN_CASES)
def test_local_response_norm_matches_oracle_and_torch(rng, case, dtype):
    shape, size, alpha, beta, k = case
    x = (rng.standard_normal(shape) * 3.0).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, saved = nbn.local_response_norm_forward(x, size, alpha, beta, k)
    dx = nbn.local_response_norm_backward(dy, saved)
    ref = oracle.local_response_norm(x, size, alpha, beta, k, dy)
    assert saved.mean is None and saved.rstd is None
    assert_close(y, ref["y"], dtype, scale=2.0, name="y")
    assert_close(dx, ref["dx"], dtype, scale=4.0, name="dx")
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.local_response_norm(xt, size, alpha, beta, k)
    yt.backward(torch.tensor(dy))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)


def test_local_response_norm_on_pytorch_opinfo_samples():
    """PyTorch 2.13's own sample inputs for nn.functional.local_response_norm (the OpInfo in
    torch.testing._internal.common_methods_invocations), forward and autograd backward."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("expecttest")
    from torch.testing._internal.common_methods_invocations import op_db
    op = next(o for o in op_db if o.name == "nn.functional.local_response_norm")
    seen = 0
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        for sample in op.sample_inputs("cpu", tdtype, requires_grad=True):
            xt = sample.input
            yt = op(xt, *sample.args, **sample.kwargs)
            x = xt.detach().numpy()
            y, saved = nbn.local_response_norm_forward(x, *sample.args, **sample.kwargs)
            tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12,
                                                                             atol=1e-14)
            np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
            if xt.numel():
                dy = torch.ones_like(yt) * 0.5 + yt.detach()
                (gx,) = torch.autograd.grad(yt, xt, dy)
                dx = nbn.local_response_norm_backward(dy.numpy(), saved)
                np.testing.assert_allclose(dx, gx.numpy(), **tol)
            seen += 1
    assert seen >= 10


def test_local_response_norm_window_sums_do_not_cancel(rng):
    """A huge value next to small ones along the channels: a running add/subtract window sum
    keeps the huge value's rounding error after it leaves and gets the small channels' d
    wrong; the block sums give every channel's d to a few ulps of the exact sums (oracle:
    math.fsum), float32 and float64."""
    for dtype, big in ((np.float64, 1e12), (np.float32, 1e6)):
        x = (rng.uniform(0.5, 1.5, (2, 40, 3))).astype(dtype)
        x[:, 3] = big
        x[:, 22] = big
        y = nbn.local_response_norm(x, 3, alpha=1.0, beta=1.0, k=0.0)
        ref = oracle.local_response_norm(x, 3, 1.0, 1.0, 0.0)["y"]
        rel = np.abs(y - ref) / np.abs(ref)
        assert rel.max() < 8 * np.finfo(dtype).eps, (dtype, rel.max())


def test_local_response_norm_layer_and_in_place(rng):
    x = rng.standard_normal((2, 6, 4, 4)).astype(np.float32)
    layer = nbn.LocalResponseNorm(3, alpha=0.1)
    y = layer(x)
    dx = layer.backward(np.ones_like(x))
    assert dx.shape == x.shape and layer.state_dict() == {}
    z = x.copy()
    nbn.local_response_norm(z, 3, alpha=0.1, out=z)
    np.testing.assert_array_equal(z, y)
    assert repr(layer) == "LocalResponseNorm(3, alpha=0.1, beta=0.75, k=1.0)"


# ---------------------------------------------------------------------------------------------
# errors

def test_errors_name_the_argument(rng):
    x = rng.standard_normal((3, 4, 5))
    w3 = np.zeros(3)
    with pytest.raises(ValueError, match=r"mean_weight must have shape \(3,\).*IN, LN, BN"):
        nbn.switch_norm(x, np.zeros(2), w3, training=True)
    with pytest.raises(ValueError, match=r"var_weight must have shape \(2,\)"):
        nbn.switch_norm(x, np.zeros(2), w3, training=True, using_bn=False)
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        nbn.switch_norm(x, w3, w3, training=False)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nbn.switch_norm(np.zeros(4), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"gate must lie in \[0, 1\]"):
        nbn.batch_instance_norm(x, np.full(4, 1.5), training=True)
    with pytest.raises(TypeError, match="gate must have"):
        nbn.batch_instance_norm(x, np.zeros(4, np.float32), training=True)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nbn.batch_instance_norm(x[:, :, :1], np.zeros(4), training=True)
    with pytest.raises(ValueError, match="size must be positive"):
        nbn.local_response_norm(x, 0)
    with pytest.raises(TypeError, match="size must be an int"):
        nbn.local_response_norm(x, 2.5)
    with pytest.raises(ValueError, match="beta must be finite"):
        nbn.local_response_norm(x, 2, beta=np.inf)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        nbn.local_response_norm(x[0], 2)
    _, saved = nbn.local_response_norm_forward(x, 2)
    with pytest.raises(ValueError, match="dy must have the forward output's shape"):
        nbn.local_response_norm_backward(x[:2], saved)
    with pytest.raises(TypeError, match="saved comes from local_response_norm_forward"):
        nbn.layer_norm_backward(x, saved)
    _, saved = nbn.switch_norm_forward(x, w3, w3, training=True)
    with pytest.raises(TypeError, match="saved comes from switch_norm_forward"):
        nbn.batch_instance_norm_backward(x, saved)
    with pytest.raises(ValueError, match="dx_out"):
        nbn.switch_norm_backward(x, saved, dx_out=np.zeros((3, 4, 6)))
    before = x.copy()
    nbn.switch_norm(x, w3, w3, training=True)
    np.testing.assert_array_equal(x, before)  # inputs never modified


def test_half_precision_within_one_ulp(rng):
    """float16 and bfloat16 x (float32 parameters): within one 16-bit ulp of the float64
    oracle on the same (rounded) values, for the three ops."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from conftest import assert_half
    for dtype in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)):
        x = (rng.standard_normal((3, 4, 6)) * 2.0 + 1.0).astype(dtype)
        w = rng.standard_normal(4).astype(np.float32)
        b = rng.standard_normal(4).astype(np.float32)
        mw, vw = rng.standard_normal(3), rng.standard_normal(3)
        y = nbn.switch_norm(x, mw, vw, None, None, w, b, True)
        ref = oracle.switch_norm(x, mw, vw, None, None, w, b, True)["y"]
        assert_half(y, ref, dtype, name=f"switch_norm {dtype}")
        gate = rng.uniform(0, 1, 4).astype(np.float32)
        y = nbn.batch_instance_norm(x, gate, None, None, w, b, True)
        ref = oracle.batch_instance_norm(x, gate, None, None, w, b, True)["y"]
        assert_half(y, ref, dtype, name=f"batch_instance_norm {dtype}")
        y = nbn.local_response_norm(x, 3, 0.5)
        assert_half(y, oracle.local_response_norm(x, 3, 0.5)["y"], dtype, name=f"lrn {dtype}")


def test_local_response_norm_on_dask_is_bitwise_the_numpy_result(rng):
    """Dask x: blocks with their neighbouring channels (map_overlap), whatever the channel
    chunks (narrower than the window's reach included), give the NumPy result bit for bit;
    the adaptive ops refuse Dask input with a TypeError."""
    da = pytest.importorskip("dask.array")
    x = rng.standard_normal((4, 11, 5, 6)).astype(np.float32)
    for chunks in [(2, 11, 5, 6), (2, 3, 5, 3), (4, 1, 5, 6), (2, (1, 6, 1, 3), 5, 6)]:
        for size in (1, 2, 5, 12):
            want = nbn.local_response_norm(x, size, 0.3)
            y, saved = nbn.local_response_norm_forward(da.from_array(x, chunks=chunks), size,
                                                      0.3)
            assert saved is None
            np.testing.assert_array_equal(y.compute(), want, err_msg=f"{chunks} {size}")
    xd = da.from_array(x, chunks=(2, 11, 5, 6))
    with pytest.raises(TypeError, match="switch_norm does not take Dask arrays"):
        nbn.switch_norm(xd, np.zeros(3), np.zeros(3), training=True)
    with pytest.raises(TypeError, match="batch_instance_norm does not take Dask arrays"):
        nbn.batch_instance_norm(xd, np.zeros(11, np.float32), training=True)


def test_local_response_norm_returns_empty_input_as_it_is():
    """As torch.nn.functional.local_response_norm: empty input comes back itself; its
    backward is an empty dx."""
    x = np.zeros((0, 4, 3), np.float32)
    assert nbn.local_response_norm(x, 3) is x
    y, saved = nbn.local_response_norm_forward(x, 3)
    assert y is x
    assert nbn.local_response_norm_backward(x, saved).shape == x.shape
