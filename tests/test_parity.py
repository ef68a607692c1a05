"""PyTorch 2.13 parity holes found by an independent check (issue 23), each tested where it was
found and across its relatives: gradients of empty batches (never a reused buffer's leftovers),
the layers' constructor signatures, exact `bias` on constant groups on every kernel path, and
the message a layer user gets for NumPy buffers with GPU input."""
import inspect

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm.cpu import _host as cpu_host

DTYPES = [np.float32, np.float64]

# op -> (forward(x, w, b), backward, x shapes with a zero-size dimension, parameter shape)
EMPTY = {
    "layer_norm": (lambda x, w, b: nbn.layer_norm_forward(x, 5, w, b), nbn.layer_norm_backward,
                   [(0, 5), (3, 0, 5)], (5,)),
    "rms_norm": (lambda x, w, b: nbn.rms_norm_forward(x, 5, w), nbn.rms_norm_backward,
                 [(0, 5), (3, 0, 5)], (5,)),
    "group_norm": (lambda x, w, b: nbn.group_norm_forward(x, 1, w, b), nbn.group_norm_backward,
                   [(0, 2), (0, 2, 3), (2, 2, 0)], (2,)),
    "instance_norm": (lambda x, w, b: nbn.instance_norm_forward(x, None, None, w, b),
                      nbn.instance_norm_backward, [(0, 2, 3), (2, 2, 0)], (2,)),
    "batch_norm": (lambda x, w, b: nbn.batch_norm_forward(x, None, None, w, b, True),
                   nbn.batch_norm_backward, [(0, 2), (0, 2, 3), (2, 2, 0)], (2,)),
}


def _normal_then_empty(rng, op, dtype, shape):
    """A normal forward and backward on data of the op's geometry (filling any reused partial
    buffers with real values), then the empty one; returns the empty call's gradients."""
    fwd, bwd, _, pshape = EMPTY[op]
    w = rng.standard_normal(pshape).astype(dtype)
    b = rng.standard_normal(pshape).astype(dtype)
    full = tuple(4 if s == 0 else s for s in shape)
    x = rng.standard_normal(full).astype(dtype)
    bwd(rng.standard_normal(full).astype(dtype), fwd(x, w, b)[1])
    y, saved = fwd(np.zeros(shape, dtype), w, b)
    assert y.shape == shape and y.dtype == dtype
    grads = bwd(np.zeros(shape, dtype), saved)
    assert grads[0].shape == shape
    return grads[1:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(EMPTY))
def test_empty_batch_parameter_gradients_are_zero(rng, op, dtype):
    """A sum over no elements is 0: dweight and dbias of an empty batch are exactly zero, after
    a normal call as much as before (they returned the previous call's gradients, or NaN)."""
    for shape in EMPTY[op][2]:
        for _ in range(3):
            for g in _normal_then_empty(rng, op, dtype, shape):
                assert g.dtype == dtype and g.shape == EMPTY[op][3]
                np.testing.assert_array_equal(g, 0.0, err_msg=f"{op} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_large_parameters_after_parallel_calls(rng, dtype):
    """The parallel kernels' partial buffers (wide rows, many chunks) are never read for an
    empty batch either."""
    C = 2048
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    for fwd, bwd in ((lambda x: nbn.layer_norm_forward(x, C, w, b), nbn.layer_norm_backward),
                     (lambda x: nbn.batch_norm_forward(x, None, None, w, b, True),
                      nbn.batch_norm_backward),
                     (lambda x: nbn.group_norm_forward(x.reshape(-1, C, 1), 8, w, b),
                      nbn.group_norm_backward)):
        x = rng.standard_normal((64, C)).astype(dtype)
        saved = fwd(x)[1]
        bwd(rng.standard_normal(saved._shape).astype(dtype), saved)
        saved = fwd(np.zeros((0, C), dtype))[1]
        dx, dw, db = bwd(np.zeros(saved._shape, dtype), saved)
        np.testing.assert_array_equal(dw, 0.0)
        np.testing.assert_array_equal(db, 0.0)


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_empty_batch_leaves_running_buffers_untouched(rng, op):
    fwd = nbn.batch_norm_forward if op == "batch_norm" else nbn.instance_norm_forward
    for shape in [(0, 3, 4), (2, 3, 0)]:
        rm = rng.standard_normal(3).astype(np.float32)
        rv = rng.random(3).astype(np.float32) + 0.5
        before = rm.copy(), rv.copy()
        fwd(np.zeros(shape, np.float32), rm, rv, None, None, True, 0.5)
        np.testing.assert_array_equal(rm, before[0])
        np.testing.assert_array_equal(rv, before[1])


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("op", sorted(EMPTY))
def test_empty_batch_matches_torch(rng, op):
    """Where PyTorch 2.13 runs the empty case, the same gradients (it raises for
    instance_norm on an empty batch, and gives NaN dweight for group_norm with empty groups,
    where the sum of no terms is 0: those are checked against zero above)."""
    TF = torch.nn.functional
    ref = {"layer_norm": lambda x, w, b: TF.layer_norm(x, (5,), w, b),
           "rms_norm": lambda x, w, b: TF.rms_norm(x, (5,), w),
           "group_norm": lambda x, w, b: TF.group_norm(x, 1, w, b),
           "instance_norm": lambda x, w, b: TF.instance_norm(x, weight=w, bias=b),
           "batch_norm": lambda x, w, b: TF.batch_norm(x, None, None, w, b, True)}[op]
    skip = {("instance_norm", (0, 2, 3)), ("group_norm", (2, 2, 0))}
    for shape in EMPTY[op][2]:
        if (op, shape) in skip:
            continue
        ours = _normal_then_empty(rng, op, np.float64, shape)
        xt = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        wt = torch.ones(EMPTY[op][3], dtype=torch.float64, requires_grad=True)
        bt = torch.ones(EMPTY[op][3], dtype=torch.float64, requires_grad=True)
        y = ref(xt, wt, bt)
        y.backward(torch.zeros_like(y))
        theirs = [wt.grad] + ([] if op == "rms_norm" else [bt.grad])
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            np.testing.assert_array_equal(o, t.numpy(), err_msg=f"{op} {shape}")


LAYERS = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
          "InstanceNorm3d", "GroupNorm", "LayerNorm", "RMSNorm"]


@pytest.mark.parametrize("name", LAYERS)
def test_constructor_signature_matches_torch(name):
    """Names, order, defaults and keyword-only marks of every parameter as in torch 2.13; our
    one extension, channel_axis (batch, group and instance norm), keyword-only, last,
    default 1 (PyTorch's layout)."""
    ours = dict(inspect.signature(getattr(nbn, name)).parameters)
    theirs = inspect.signature(getattr(torch.nn, name)).parameters
    extra = ours.pop("channel_axis", None)
    if name.startswith(("BatchNorm", "InstanceNorm", "GroupNorm")):
        assert extra is not None and extra.kind == inspect.Parameter.KEYWORD_ONLY
        assert extra.default == 1
    assert list(ours) == list(theirs)
    for key, p in theirs.items():
        assert ours[key].kind == p.kind, key
        assert ours[key].default == p.default, key


CHANNEL_LAYERS = {"BatchNorm1d": ((6, 4, 5), dict()), "BatchNorm2d": ((6, 4, 3, 5), dict()),
                  "BatchNorm3d": ((3, 4, 2, 3, 5), dict()),
                  "InstanceNorm1d": ((6, 4, 5), dict(affine=True)),
                  "InstanceNorm2d": ((3, 4, 3, 5), dict(affine=True)),
                  "InstanceNorm3d": ((2, 4, 2, 3, 5), dict(affine=True))}


@pytest.mark.parametrize("name", sorted(CHANNEL_LAYERS) + ["GroupNorm"])
def test_bias_false_matches_torch(rng, name):
    """bias=False: a weight and no bias, no 'bias' in the state_dict, torch's state_dict loads,
    and forward/backward agree with torch's module."""
    if name == "GroupNorm":
        shape, args, kwargs = (5, 4, 7), (2, 4), {}
    else:
        shape, kwargs = CHANNEL_LAYERS[name]
        args = (4,)
    theirs = getattr(torch.nn, name)(*args, bias=False, dtype=torch.float64, **kwargs)
    ours = getattr(nbn, name)(*args, bias=False, dtype=np.float64, **kwargs)
    assert ours.bias is None and ours.weight is not None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng.standard_normal(4)))
    ours.load_state_dict(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(dy))
    y = ours(x)
    dx = ours.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.grad_weight, theirs.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-10)
    assert ours.grad_bias is None


@pytest.mark.parametrize("name", LAYERS)
def test_device_argument(name):
    """device= means what .to() means; 'cpu' and None keep NumPy parameters, and anything else
    is refused by name."""
    args = {"GroupNorm": (2, 4), "LayerNorm": (4,), "RMSNorm": (4,)}.get(name, (4,))
    cls = getattr(nbn, name)
    for device in (None, "cpu", torch.device("cpu")):
        layer = cls(*args, device=device)
        assert layer.device == "cpu"
        x = np.ones((3, 4, 5) if name not in ("LayerNorm", "RMSNorm") else (3, 4), np.float32)
        if name.startswith("InstanceNorm1"):
            x = np.ones((3, 4, 5), np.float32)
        if name.endswith("2d"):
            x = np.ones((3, 4, 2, 5), np.float32)
        if name.endswith("3d"):
            x = np.ones((3, 4, 2, 2, 5), np.float32)
        assert isinstance(layer(x), np.ndarray)
    with pytest.raises(ValueError, match="device"):
        cls(*args, device="tpu")


def _kernel_paths(monkeypatch, path):
    """Send batch_norm down one of its three statistics paths on small shapes."""
    if path in ("columns", "slabs"):
        monkeypatch.setattr(cpu_host, "SERIAL_MAX_ELEMENTS", 0)
        monkeypatch.setattr(cpu_host, "FUSED_COLUMNS_MAX_ELEMENTS", 0)
    if path == "columns":
        monkeypatch.setattr(cpu_host, "COLUMN_BLOCK_BYTES", 600)
        monkeypatch.setattr(cpu_host, "COLUMN_SHIFT_MIN_ROWS", 2)
        monkeypatch.setattr(cpu_host, "COLUMN_MIN_ROWS", 0)
        monkeypatch.setattr(cpu_host, "COLUMN_PARTIAL_MIN_ELEMENTS", 1)
    if path == "slabs":
        monkeypatch.setattr(cpu_host, "SLAB_MIN", 1)
        monkeypatch.setattr(cpu_host, "SLAB_MIN_BACKWARD", 1)


@pytest.mark.parametrize("path", ["fused", "columns", "slabs"])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 4, 7), (9, 4), (37, 4, 3)])
def test_batch_norm_constant_channels_are_exactly_bias(rng, monkeypatch, shape, dtype, affine,
                                                       path):
    """Channels of one repeated value normalise to exactly `bias` (0 without it) on every
    statistics path, with values that no sum of a few copies represents exactly (0.1)."""
    _kernel_paths(monkeypatch, path)
    x = rng.standard_normal(shape).astype(dtype)
    x[:, 1] = 0.1
    x[:, 3] = -3.7e3
    w = rng.standard_normal(4).astype(dtype) if affine else None
    b = rng.standard_normal(4).astype(dtype) if affine else None
    y, saved = nbn.batch_norm_forward(x, None, None, w, b, True)
    for c in (1, 3):
        np.testing.assert_array_equal(y[:, c], 0.0 if b is None else b[c])
    dx = nbn.batch_norm_backward(rng.standard_normal(shape).astype(dtype), saved)[0]
    assert np.all(np.isfinite(dx))


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["layer_norm", "layer_norm_pairs", "group_norm",
                                "instance_norm"])
def test_constant_groups_are_exactly_bias(rng, monkeypatch, op, dtype, parallel):
    """The relatives of batch_norm's constant channels: every rows kernel (serial, parallel,
    pairs of long rows), groups of one repeated value give exactly `bias`."""
    if parallel:
        monkeypatch.setattr(cpu_host, "SERIAL_MAX_ELEMENTS", 0)
    if op.startswith("layer_norm"):
        L = 4099 if op == "layer_norm_pairs" else 7
        x = rng.standard_normal((9, L)).astype(dtype)
        x[2] = 0.1
        x[5] = -3.7e3
        w = rng.standard_normal(L).astype(dtype)
        b = rng.standard_normal(L).astype(dtype)
        y = nbn.layer_norm(x, L, w, b)
        for r in (2, 5):
            np.testing.assert_array_equal(y[r], b)
        return
    x = rng.standard_normal((3, 6, 7)).astype(dtype)
    w = rng.standard_normal(6).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    x[1, 2:4] = 0.1  # group_norm's group 1 of sample 1 (3 groups of 2 channels)
    x[2, 0:2] = -3.7e3
    y = (nbn.group_norm(x, 3, w, b) if op == "group_norm"
         else nbn.instance_norm(x, weight=w, bias=b))
    for n, c in ((1, 2), (1, 3), (2, 0), (2, 1)):
        np.testing.assert_array_equal(y[n, c], b[c])
