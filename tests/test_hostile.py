"""The hostile-input matrix: every argument of every public function and layer constructor,
tried with wrong types, shapes, dtypes and values. Each must raise a TypeError or ValueError
whose message names the argument, before any kernel runs, leaving x, out and the running
buffers exactly as they were."""
import inspect

import numpy as np
import pytest

import numbanorm as nbn
from conftest import ACCEPTED

F32 = np.float32
N, C, H = 3, 4, 5


def _x():
    return (np.arange(N * C * H * H, dtype=F32).reshape(N, C, H, H) % 7) * 0.5 + 1.0


def _vec(n=C, dtype=F32, fill=1.0):
    return np.full(n, fill, dtype)


BAD_ARRAY = [
    ("a string", TypeError),
    (np.ones(C, np.int64), TypeError),
    (np.ones(C, np.float16), TypeError),
    (np.ones(C, np.complex64), TypeError),
    (np.ones(C, np.float64), TypeError),      # dtype differs from x's float32
    (np.ones(C + 1, F32), ValueError),
    (np.ones((1, C), F32), ValueError),
    ({"weight": 1}, TypeError),
]
BAD_EPS = [(-1e-5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
           ("1e-5", TypeError), (True, TypeError), (None, TypeError), ([1e-5], TypeError)]
BAD_MOMENTUM = [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError),
                ("0.1", TypeError), (True, TypeError), ([0.1], TypeError)]
BAD_OUT = [("out", TypeError), ([0.0], TypeError), (np.empty((N, C), F32), ValueError),
           (np.empty((N, C, H, H), np.float64), TypeError)]


def _functions():
    """name -> (function, valid keyword arguments, {argument: [(bad value, exception)]})."""
    bn_args = dict(running_mean=_vec(fill=0.0), running_var=_vec(), weight=_vec(), bias=_vec(),
                   training=True, momentum=0.1, eps=1e-5)
    params = {"weight": BAD_ARRAY, "bias": BAD_ARRAY, "eps": BAD_EPS, "out": BAD_OUT}
    lead = dict(weight=np.ones((H, H), F32), bias=np.zeros((H, H), F32), eps=1e-5)
    bad_2d = [(a if not (isinstance(a, np.ndarray) and a.shape == (C,)) else
               np.ones(H, a.dtype), e) for a, e in BAD_ARRAY]
    return {
        "batch_norm": (nbn.batch_norm, bn_args, dict(
            params, running_mean=BAD_ARRAY[1:], running_var=BAD_ARRAY[1:],
            momentum=BAD_MOMENTUM)),
        "batch_norm_forward": (nbn.batch_norm_forward, bn_args, dict(
            params, running_mean=BAD_ARRAY[1:], momentum=BAD_MOMENTUM)),
        "instance_norm": (nbn.instance_norm, dict(bn_args, training=None, use_input_stats=True),
                          dict(params, running_var=BAD_ARRAY[1:], momentum=BAD_MOMENTUM)),
        "group_norm": (nbn.group_norm, dict(num_groups=2, weight=_vec(), bias=_vec(), eps=1e-5),
                       dict(params, num_groups=[(0, ValueError), (-2, ValueError),
                                                (3, ValueError), (2.0, TypeError),
                                                ("2", TypeError), (True, TypeError),
                                                (None, TypeError)])),
        "layer_norm": (nbn.layer_norm, dict(lead, normalized_shape=(H, H)), dict(
            weight=bad_2d, bias=bad_2d, eps=BAD_EPS, out=BAD_OUT,
            normalized_shape=[((H, H, H, H, H), ValueError), ((4,), ValueError),
                              ((), ValueError), (3.0, TypeError), ("55", TypeError),
                              ((-1,), ValueError), ((H, 5.0), TypeError), (None, TypeError)])),
        "rms_norm": (nbn.rms_norm, dict(normalized_shape=(H, H), weight=lead["weight"], eps=None),
                     dict(weight=bad_2d, eps=BAD_EPS[:-2], out=BAD_OUT,
                          normalized_shape=[((4,), ValueError), (3.0, TypeError)])),
    }


def _matrix():
    for name, (fn, kwargs, bad) in _functions().items():
        for arg, values in bad.items():
            for i, (value, exc) in enumerate(values):
                yield pytest.param(name, arg, i, exc, id=f"{name}-{arg}-{i}")


@pytest.mark.parametrize("name,arg,index,exc", list(_matrix()))
def test_function_argument(name, arg, index, exc):
    fn, kwargs, bad = _functions()[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k == "eps"}
    if name == "instance_norm":  # instance_norm takes use_input_stats, not training
        kwargs.pop("training", None)
    value = bad[arg][index][0]
    x = _x()
    before = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    x_before = x.copy()
    out_before = value.copy() if arg == "out" and isinstance(value, np.ndarray) else None
    kwargs[arg] = value
    with pytest.raises(exc) as info:
        fn(x, **kwargs)
    assert arg in str(info.value), f"message does not name {arg!r}: {info.value}"
    np.testing.assert_array_equal(x, x_before)
    for k, v in before.items():
        if k != arg:
            np.testing.assert_array_equal(kwargs[k], v, err_msg=f"{k} was modified")
    if out_before is not None:
        np.testing.assert_array_equal(value, out_before)


@pytest.mark.parametrize("fn", [nbn.batch_norm, nbn.layer_norm, nbn.group_norm, nbn.rms_norm,
                                nbn.instance_norm])
@pytest.mark.parametrize("x,exc", [
    ("x", TypeError), (None, TypeError), (3.0, ValueError), (np.ones((N, C), np.int32), TypeError),
    (np.ones((N, C), bool), TypeError), (np.ones((N, C), np.longdouble), TypeError),
    ([[1, 2], [3, "a"]], TypeError), (np.ones((N, C), object), TypeError),
])
def test_x_argument(fn, x, exc):
    args = {nbn.layer_norm: (C,), nbn.rms_norm: (C,), nbn.group_norm: (2,)}.get(fn, ())
    with pytest.raises(exc, match="x "):
        fn(x, *args)


def test_tensors_of_other_libraries():
    torch = pytest.importorskip("torch")
    x = _x()
    # PyTorch CPU tensors are converted like any array-like (zero-copy), and the result is NumPy.
    y = nbn.layer_norm(torch.from_numpy(x), (H, H))
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, nbn.layer_norm(x, (H, H)))
    # A tensor that requires grad cannot be read without detaching: refused, naming x.
    with pytest.raises(TypeError, match="x must be a " + ACCEPTED + " array"):
        nbn.layer_norm(torch.ones(2, 3, requires_grad=True), 3)
    # An integer tensor has the wrong dtype.
    with pytest.raises(TypeError, match="x must have dtype"):
        nbn.layer_norm(torch.ones(2, 3, dtype=torch.int32), 3)
    # Running buffers that training updates must be NumPy arrays, so the update is visible.
    with pytest.raises(TypeError, match="running_mean must be a NumPy \\(or GPU\\) array"):
        nbn.batch_norm(x, torch.zeros(C), _vec(), training=True)


def test_dy_argument():
    x = _x()
    y, saved = nbn.group_norm_forward(x, 2)
    for dy, exc in [("dy", TypeError), (np.ones((N, C, H), F32), ValueError),
                    (np.ones(x.shape), TypeError), (None, TypeError)]:
        with pytest.raises(exc, match="dy"):
            nbn.group_norm_backward(dy, saved)
    for saved_bad in (None, (y, y), "saved"):
        with pytest.raises(TypeError, match="saved"):
            nbn.group_norm_backward(y, saved_bad)


LAYERS = [
    (nbn.BatchNorm1d, dict(num_features=C)), (nbn.BatchNorm2d, dict(num_features=C)),
    (nbn.BatchNorm3d, dict(num_features=C)), (nbn.InstanceNorm1d, dict(num_features=C)),
    (nbn.InstanceNorm2d, dict(num_features=C)), (nbn.InstanceNorm3d, dict(num_features=C)),
    (nbn.LayerNorm, dict(normalized_shape=C)), (nbn.GroupNorm, dict(num_groups=2, num_channels=C)),
    (nbn.RMSNorm, dict(normalized_shape=C)),
]
BAD_CONSTRUCTOR = {
    "num_features": [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("4", TypeError),
                     (None, TypeError)],
    "num_channels": [(0, ValueError), (3, ValueError), (4.0, TypeError)],
    "num_groups": [(0, ValueError), (3, ValueError), ("2", TypeError)],
    "normalized_shape": [((), ValueError), (-4, ValueError), (4.0, TypeError),
                         ("abc", TypeError)],
    "eps": [(-1.0, ValueError), (float("nan"), ValueError), ("1e-5", TypeError)],
    "momentum": [(-0.5, ValueError), (2.0, ValueError), ("0.1", TypeError)],
    "dtype": [(np.int32, TypeError), ("bogus", TypeError), (np.longdouble, TypeError)],
}


def _constructor_matrix():
    for cls, base in LAYERS:
        names = inspect.signature(cls.__init__).parameters
        for arg, values in BAD_CONSTRUCTOR.items():
            if arg in names:
                for i, (value, exc) in enumerate(values):
                    yield pytest.param(cls, base, arg, value, exc,
                                       id=f"{cls.__name__}-{arg}-{i}")


@pytest.mark.parametrize("cls,base,arg,value,exc", list(_constructor_matrix()))
def test_layer_constructor_argument(cls, base, arg, value, exc):
    with pytest.raises(exc) as info:
        cls(**dict(base, **{arg: value}))
    assert arg in str(info.value), f"message does not name {arg!r}: {info.value}"


@pytest.mark.parametrize("cls,base", LAYERS)
def test_layer_bad_input_leaves_state_untouched(cls, base):
    layer = cls(**base)
    shape = {nbn.BatchNorm1d: (N, C), nbn.InstanceNorm1d: (N, C, H), nbn.LayerNorm: (N, C),
             nbn.RMSNorm: (N, C), nbn.BatchNorm3d: (N, C, 2, 2, 2),
             nbn.InstanceNorm3d: (N, C, 2, 2, 2)}.get(cls, (N, C, H, H))
    state = {k: np.array(v, copy=True) for k, v in layer.state_dict().items()}
    bads = [np.ones(shape, np.int32), "x"]
    if state:  # a layer with parameters or buffers refuses another dtype; one without accepts it
        bads.append(np.ones(shape, np.float64))
    for bad in bads:
        with pytest.raises((TypeError, ValueError)) as info:
            layer(bad)
        assert "x" in str(info.value) or "weight" in str(info.value)
    x = np.random.default_rng(0).standard_normal(shape).astype(F32)
    layer(x)  # a good forward still works after the failures
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.ones(shape[:-1] + (shape[-1] + 1,), F32))
    layer.backward(np.ones(shape, F32))
    for k, v in state.items():
        if k not in ("running_mean", "running_var", "num_batches_tracked"):
            np.testing.assert_array_equal(layer.state_dict()[k], v)
