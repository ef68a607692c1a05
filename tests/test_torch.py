"""Parity with PyTorch 2.x on the CPU: functional ops with autograd gradients, layers over
several training steps, train/eval switching and state_dict round trips with real modules.
Skipped only when torch is not installed (CI installs the CPU build)."""
import numpy as np
import pytest

import numbanorm as nbn

torch = pytest.importorskip("torch")
TF = torch.nn.functional

# PyTorch computes float32 in float32; numbanorm in float64 rounded once. The difference is
# PyTorch's own rounding, a few float32 ulps of the values (larger for sums over many terms).
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-9, atol=1e-9)}
DTYPES = [np.float32, np.float64]


def T(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def _close(ours, theirs, dtype, name):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    assert ours.dtype == np.dtype(dtype), name
    np.testing.assert_allclose(ours, theirs, err_msg=name, **TOL[dtype])


def _grads(torch_fn, x, params, dy):
    xt = T(x, True)
    pts = [None if p is None else T(p, True) for p in params]
    y = torch_fn(xt, *pts)
    y.backward(T(dy))
    return y, xt.grad, [None if p is None else p.grad for p in pts]


CASES = {
    "layer_norm": ((6, 9, 33), lambda x, w, b: TF.layer_norm(x, (33,), w, b, 1e-5),
                   lambda x, w, b: nbn.layer_norm_forward(x, 33, w, b, 1e-5),
                   nbn.layer_norm_backward, (33,)),
    "layer_norm_2d": ((5, 7, 11), lambda x, w, b: TF.layer_norm(x, (7, 11), w, b, 1e-5),
                      lambda x, w, b: nbn.layer_norm_forward(x, (7, 11), w, b, 1e-5),
                      nbn.layer_norm_backward, (7, 11)),
    "group_norm": ((4, 12, 7, 5), lambda x, w, b: TF.group_norm(x, 4, w, b, 1e-5),
                   lambda x, w, b: nbn.group_norm_forward(x, 4, w, b, 1e-5),
                   nbn.group_norm_backward, (12,)),
    "instance_norm": ((3, 5, 9, 8), lambda x, w, b: TF.instance_norm(x, None, None, w, b),
                      lambda x, w, b: nbn.instance_norm_forward(x, None, None, w, b),
                      nbn.instance_norm_backward, (5,)),
    "batch_norm": ((16, 5, 9, 8), lambda x, w, b: TF.batch_norm(x, None, None, w, b, True),
                   lambda x, w, b: nbn.batch_norm_forward(x, None, None, w, b, True),
                   nbn.batch_norm_backward, (5,)),
    "batch_norm_2d": ((300, 40), lambda x, w, b: TF.batch_norm(x, None, None, w, b, True),
                      lambda x, w, b: nbn.batch_norm_forward(x, None, None, w, b, True),
                      nbn.batch_norm_backward, (40,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_functional_and_gradients(rng, dtype, case):
    shape, tfn, ours_fwd, ours_bwd, pshape = CASES[case]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(pshape).astype(dtype)
    b = rng.standard_normal(pshape).astype(dtype)
    y_t, dx_t, (dw_t, db_t) = _grads(tfn, x, (w, b), dy)
    y, saved = ours_fwd(x, w, b)
    dx, dw, db = ours_bwd(dy, saved)
    _close(y, y_t, dtype, "y")
    _close(dx, dx_t, dtype, "dx")
    _close(dw, dw_t, dtype, "dweight")
    _close(db, db_t, dtype, "dbias")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6, 32), (2, 3, 4, 16), (64, 128)])
def test_rms_norm(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[-1:]).astype(dtype)
    for eps in (None, 1e-3):
        y_t, dx_t, (dw_t,) = _grads(lambda a, b: TF.rms_norm(a, shape[-1:], b, eps), x, (w,), dy)
        y, saved = nbn.rms_norm_forward(x, shape[-1:], w, eps)
        dx, dw = nbn.rms_norm_backward(dy, saved)
        _close(y, y_t, dtype, "y")
        _close(dx, dx_t, dtype, "dx")
        _close(dw, dw_t, dtype, "dweight")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_eval_gradients(rng, dtype):
    x = rng.standard_normal((8, 3, 5)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    rm = rng.standard_normal(3).astype(dtype)
    rv = (rng.random(3) + 0.5).astype(dtype)
    w, b = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    y_t, dx_t, (dw_t, db_t) = _grads(
        lambda a, ww, bb: TF.batch_norm(a, T(rm), T(rv), ww, bb, False), x, (w, b), dy)
    y, saved = nbn.batch_norm_forward(x, rm, rv, w, b, training=False)
    dx, dw, db = nbn.batch_norm_backward(dy, saved)
    for ours, theirs, name in ((y, y_t, "y"), (dx, dx_t, "dx"), (dw, dw_t, "dw"),
                               (db, db_t, "db")):
        _close(ours, theirs, dtype, name)


LAYERS = [
    ("BatchNorm1d", dict(num_features=6), (10, 6)),
    ("BatchNorm1d", dict(num_features=6, momentum=None), (10, 6, 7)),
    ("BatchNorm2d", dict(num_features=4, momentum=0.3), (5, 4, 6, 7)),
    ("BatchNorm3d", dict(num_features=3, affine=False), (2, 3, 4, 5, 6)),
    ("BatchNorm2d", dict(num_features=4, track_running_stats=False), (5, 4, 3, 3)),
    ("InstanceNorm1d", dict(num_features=4, affine=True, track_running_stats=True), (3, 4, 9)),
    ("InstanceNorm2d", dict(num_features=4), (3, 4, 5, 6)),
    ("InstanceNorm2d", dict(num_features=4, affine=True), (4, 5, 6)),
    ("InstanceNorm3d", dict(num_features=2, track_running_stats=True, momentum=None),
     (2, 2, 3, 4, 5)),
    ("LayerNorm", dict(normalized_shape=(5, 6)), (3, 4, 5, 6)),
    ("LayerNorm", dict(normalized_shape=6, bias=False), (3, 6)),
    ("GroupNorm", dict(num_groups=3, num_channels=6), (2, 6, 5, 5)),
    ("RMSNorm", dict(normalized_shape=8), (4, 8)),
    ("RMSNorm", dict(normalized_shape=(2, 8), eps=1e-4), (3, 2, 8)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kwargs,shape", LAYERS)
def test_layers_over_training_steps(rng, dtype, name, kwargs, shape):
    """Three training steps, then eval, then train again: outputs, input gradients, parameter
    gradients and buffers all follow PyTorch's module."""
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    theirs = getattr(torch.nn, name)(**kwargs, dtype=tdtype)
    ours = getattr(nbn, name)(**kwargs, dtype=dtype)
    # non-trivial parameters, the same on both sides
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
    ours.load_state_dict(theirs.state_dict())
    for step, mode in enumerate(["train", "train", "train", "eval", "train"]):
        getattr(theirs, mode)()
        getattr(ours, mode)()
        x = (rng.standard_normal(shape) * 1.5 + step).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        xt = T(x, True)
        for p in theirs.parameters():
            p.grad = None
        y_t = theirs(xt)
        y_t.backward(T(dy))
        y = ours(x)
        dx = ours.backward(dy)
        _close(y, y_t, dtype, f"{mode} {step} y")
        _close(dx, xt.grad, dtype, f"{mode} {step} dx")
        params = dict(theirs.named_parameters())
        if "weight" in params:
            _close(ours.grad_weight, params["weight"].grad, dtype, "grad_weight")
        if "bias" in params:
            _close(ours.grad_bias, params["bias"].grad, dtype, "grad_bias")
        for key, value in theirs.state_dict().items():
            if key == "num_batches_tracked":
                assert ours.num_batches_tracked == int(value), key
            else:
                _close(ours.state_dict()[key], value, dtype, key)
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_state_dict_round_trip_both_ways(rng):
    """A model trained in PyTorch runs on numbanorm once converted, and back."""
    theirs = torch.nn.BatchNorm2d(5)
    theirs.train()
    for _ in range(3):
        theirs(torch.randn(4, 5, 3, 3) * 3 + 2)
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(5))
        theirs.bias.copy_(torch.randn(5))
    ours = nbn.BatchNorm2d(5)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    theirs.eval()
    ours.eval()
    x = rng.standard_normal((2, 5, 4, 4)).astype(np.float32)
    _close(ours(x), theirs(T(x)), np.float32, "eval output")
    # and back: numbanorm -> PyTorch
    ours.train()
    ours(x * 2 + 1)
    back = torch.nn.BatchNorm2d(5)
    back.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                          ours.state_dict().items()})
    assert int(back.num_batches_tracked) == 4
    _close(ours.running_mean, back.running_mean, np.float32, "running_mean")
    _close(ours.running_var, back.running_var, np.float32, "running_var")


def test_float32_large_mean_variance_beats_torch(rng):
    """float32 data with mean 1e6 and std 1: the variance within 1e-5 relative of float64."""
    x = (rng.standard_normal((4096, 8)) + 1e6).astype(np.float32)
    ref = x.astype(np.float64).var(axis=0)
    _, saved = nbn.batch_norm_forward(x, training=True, eps=0.0)
    var = 1.0 / saved.rstd.astype(np.float64) ** 2
    np.testing.assert_allclose(var, ref, rtol=1e-5)
