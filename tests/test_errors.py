"""Bad input: a ValueError or TypeError naming the argument, raised before any kernel runs,
with inputs and running buffers left untouched."""
import numpy as np
import pytest

import numbanorm as nbn
from conftest import ACCEPTED

X4 = np.ones((2, 4, 3, 3), np.float32) + np.arange(72, dtype=np.float32).reshape(2, 4, 3, 3)


def raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("bad,exc,match", [
    (np.ones((2, 4), np.int32), TypeError, "x must have dtype " + ACCEPTED),
    (np.ones((2, 4), bool), TypeError, "x must have dtype"),
    (np.ones((2, 4), np.complex64), TypeError, "x must have dtype"),
    (np.ones((2, 4), np.longdouble), TypeError, "x must have dtype"),
    ("abc", TypeError, "x must be a " + ACCEPTED + " array"),
    (None, TypeError, "x must be"),
])
def test_bad_x_every_op(bad, exc, match):
    for fn in (lambda x: nbn.layer_norm(x, 4), lambda x: nbn.rms_norm(x, 4),
               lambda x: nbn.group_norm(x, 2), lambda x: nbn.batch_norm(x, training=True)):
        raises(exc, match, fn, bad)


def test_wrong_ndim():
    raises(ValueError, "x must have at least 2 dimensions", nbn.batch_norm, np.ones(5),
           training=True)
    raises(ValueError, "x must have at least 3 dimensions", nbn.instance_norm,
           np.ones((2, 3)))
    raises(ValueError, "x must have at least 2 dimensions", nbn.group_norm, np.ones(4), 2)
    raises(ValueError, "BatchNorm2d expects 4D input", nbn.BatchNorm2d(4), np.ones((2, 4)))
    raises(ValueError, "InstanceNorm1d expects 2D or 3D input", nbn.InstanceNorm1d(4),
           np.ones((2, 4, 3, 3)))


def test_parameter_shapes_and_dtypes():
    w = np.ones(4, np.float32)
    raises(ValueError, r"weight must have shape \(4,\)", nbn.batch_norm, X4, None, None,
           np.ones(3, np.float32), training=True)
    raises(ValueError, r"bias must have shape \(4,\)", nbn.group_norm, X4, 2, w,
           np.ones(5, np.float32))
    raises(TypeError, "weight must have the input's dtype float32", nbn.group_norm, X4, 2,
           np.ones(4))
    raises(ValueError, r"weight must have shape \(3,\)", nbn.layer_norm, X4, 3,
           np.ones((1, 3), np.float32))
    raises(TypeError, "bias must have dtype", nbn.layer_norm, X4, 3, None,
           np.ones(3, np.int64))
    raises(ValueError, r"running_mean must have shape \(4,\)", nbn.batch_norm, X4,
           np.zeros(3, np.float32), np.ones(4, np.float32))
    raises(TypeError, "running_var must have the input's dtype", nbn.batch_norm, X4,
           np.zeros(4, np.float32), np.ones(4), training=True)
    raises(ValueError, "running_mean and running_var must be given together.*got running_mean "
           "and running_var=None", nbn.batch_norm, X4, np.zeros(4, np.float32), None,
           training=True)
    raises(ValueError, "got running_var and running_mean=None", nbn.batch_norm, X4, None,
           np.ones(4, np.float32), training=True)


def test_normalized_shape():
    raises(ValueError, "normalized_shape .* must match the trailing dimensions", nbn.layer_norm,
           X4, (4, 3))
    raises(ValueError, "normalized_shape .* must match", nbn.rms_norm, X4, 5)
    raises(TypeError, "normalized_shape must be an int or a tuple", nbn.layer_norm, X4, 3.0)
    raises(TypeError, "normalized_shape must contain ints", nbn.layer_norm, X4, (3.0,))
    raises(ValueError, "normalized_shape must name at least one", nbn.layer_norm, X4, ())


def test_num_groups():
    raises(ValueError, r"num_groups \(3\) must divide the number of channels \(4\)",
           nbn.group_norm, X4, 3)
    raises(ValueError, "num_groups must be positive", nbn.group_norm, X4, 0)
    raises(TypeError, "num_groups must be an int", nbn.group_norm, X4, 2.0)
    raises(ValueError, "num_channels .* must be divisible by num_groups", nbn.GroupNorm, 3, 4)


@pytest.mark.parametrize("eps,exc", [(-1e-5, ValueError), (float("nan"), ValueError),
                                     (float("inf"), ValueError), ("1e-5", TypeError),
                                     (None, TypeError)])
def test_eps(eps, exc):
    raises(exc, "eps", nbn.layer_norm, X4, 3, eps=eps)
    raises(exc, "eps", nbn.batch_norm, X4, training=True, eps=eps)
    raises(exc, "eps", nbn.LayerNorm, 3, eps=eps)
    if eps is not None:  # None is rms_norm's default (machine epsilon)
        raises(exc, "eps", nbn.rms_norm, X4, 3, eps=eps)


def test_momentum_and_num_features():
    raises(ValueError, r"momentum must be in \[0, 1\]", nbn.batch_norm, X4, training=True,
           momentum=1.5)
    raises(TypeError, "momentum must be a real number", nbn.BatchNorm2d, 4, momentum="0.1")
    raises(ValueError, "momentum must be in", nbn.InstanceNorm2d, 4, momentum=-0.1)
    raises(ValueError, "num_features must be positive", nbn.BatchNorm1d, 0)
    raises(TypeError, "num_features must be an int", nbn.BatchNorm1d, 4.0)
    raises(TypeError, "dtype must be " + ACCEPTED, nbn.LayerNorm, 4, dtype=np.int32)


def test_batch_norm_modes():
    raises(ValueError, "Expected more than 1 value per channel when training", nbn.batch_norm,
           np.ones((1, 4), np.float32), training=True)
    raises(ValueError, "running_mean and running_var are required when training=False",
           nbn.batch_norm, X4)
    raises(ValueError, "Expected more than 1 spatial element", nbn.instance_norm,
           np.ones((2, 4, 1), np.float32))


def test_read_only_running_buffer_is_refused_and_untouched():
    rm = np.zeros(4, np.float32)
    rv = np.ones(4, np.float32)
    rv.flags.writeable = False
    raises(ValueError, "running_var is read-only", nbn.batch_norm, X4, rm, rv, training=True)
    np.testing.assert_array_equal(rm, 0)
    # eval mode only reads them: fine
    nbn.batch_norm(X4, rm, rv, training=False)


def test_out_argument_errors():
    raises(ValueError, "out must have the input's shape", nbn.layer_norm, X4, 3,
           out=np.empty((2, 4), np.float32))
    raises(TypeError, "out must have the input's dtype", nbn.layer_norm, X4, 3,
           out=np.empty(X4.shape))
    raises(TypeError, "out must be a NumPy array", nbn.layer_norm, X4, 3, out=[0.0])
    x = X4.copy()
    raises(ValueError, "out overlaps the input", nbn.layer_norm_forward, x, 3, out=x)
    big = np.zeros((3, 4, 3, 3), np.float32)
    raises(ValueError, "out overlaps the input", nbn.layer_norm, big[:2], 3, out=big[1:])
    ro = np.empty_like(X4)
    ro.flags.writeable = False
    raises(ValueError, "out is read-only", nbn.layer_norm, X4, 3, out=ro)


def test_backward_errors():
    y, saved = nbn.layer_norm_forward(X4, 3)
    raises(ValueError, "dy must have the forward output's shape", nbn.layer_norm_backward,
           np.ones((2, 4), np.float32), saved)
    raises(TypeError, "dy must have the forward input's dtype", nbn.layer_norm_backward,
           np.ones(X4.shape), saved)
    raises(TypeError, "saved comes from layer_norm_forward", nbn.batch_norm_backward, y, saved)
    raises(TypeError, "saved must be the record", nbn.layer_norm_backward, y, (1, 2))
    layer = nbn.LayerNorm(3)
    raises(RuntimeError, r"backward\(\) called before forward\(\)", layer.backward, y)
    layer(X4)
    raises(ValueError, "dy must have the forward output's shape", layer.backward,
           np.ones((2, 3), np.float32))


def test_dx_out_errors():
    x = X4.copy()
    dy = np.ones_like(x)
    _, saved = nbn.layer_norm_forward(x, 3)
    raises(ValueError, "dx_out must have dy's shape", nbn.layer_norm_backward, dy, saved,
           dx_out=np.empty((2, 4), np.float32))
    raises(TypeError, "dx_out must have dy's dtype", nbn.layer_norm_backward, dy, saved,
           dx_out=np.empty(x.shape))
    raises(TypeError, "dx_out must be a NumPy array", nbn.layer_norm_backward, dy, saved,
           dx_out=[0.0])
    ro = np.empty_like(x)
    ro.flags.writeable = False
    raises(ValueError, "dx_out is read-only", nbn.layer_norm_backward, dy, saved, dx_out=ro)
    # the kernels read dy and x while they write dx: no overlap with either, not even exact
    raises(ValueError, "dx_out overlaps dy", nbn.layer_norm_backward, dy, saved, dx_out=dy)
    raises(ValueError, "dx_out overlaps the x saved by the forward pass",
           nbn.layer_norm_backward, dy, saved, dx_out=x)
    _, saved_bn = nbn.batch_norm_forward(x, training=True)
    raises(ValueError, "dx_out overlaps the x saved", nbn.batch_norm_backward, dy, saved_bn,
           dx_out=x)
    np.testing.assert_array_equal(x, X4)
    np.testing.assert_array_equal(dy, 1)


def test_load_state_dict_errors_leave_layer_untouched():
    layer = nbn.BatchNorm1d(3)
    good = layer.state_dict()
    bad = dict(good, running_var=np.ones(4, np.float32), running_mean=np.full(3, 7.0))
    raises(ValueError, r"state_dict\['running_var'\] must have shape", layer.load_state_dict,
           bad)
    np.testing.assert_array_equal(layer.running_mean, 0)  # nothing half-written
    raises(ValueError, "missing keys", layer.load_state_dict, {"weight": good["weight"]})
    raises(ValueError, "unexpected keys", layer.load_state_dict, dict(good, extra=1))


def test_failed_training_forward_does_not_count_a_batch():
    layer = nbn.BatchNorm2d(4)
    with pytest.raises(TypeError):
        layer(X4.astype(np.int32))
    assert layer.num_batches_tracked == 0


def _outcome(fn):
    """('ok', result) or (exception type, message) of fn()."""
    try:
        return "ok", fn()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


def test_fast_path_accepts_only_what_the_full_checks_accept():
    """layer_norm/rms_norm take a fast path for plainly valid NumPy calls
    (_validate.plain_trailing_call; device=None). device='cpu' runs the same call through the
    full checks: every combination of good and bad arguments must give the same result, bit
    for bit, or the same error."""
    from numbanorm import _validate
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    xs = [x, x.astype(np.float64), np.asfortranarray(x), x[:, ::-1], x.astype(">f4"),
          x.astype(np.int32), x[0], np.float32(1.0), x.tolist(), x.astype(np.float16)]
    shapes = [4, (4,), (3, 4), 3, (4.0,), -4, True, np.int64(4), [4], ()]
    params = [None, np.ones(4, np.float32), np.ones(4), np.ones(5, np.float32),
              np.ones((1, 4), np.float32), [1.0] * 4, np.ones(4, np.float16)]
    epss = [1e-5, 0.0, None, -1.0, float("inf"), float("nan"), 1, np.float64(1e-3), True]
    fast = 0
    for xi in xs:
        for ns in shapes:
            for w in params:
                for b in (None, params[1], params[-1]):
                    for eps in epss:
                        for op in ("layer_norm", "rms_norm"):
                            args = (xi, ns, w) + ((b,) if op == "layer_norm" else ())
                            if op == "rms_norm" and b is not None:
                                continue
                            plain = _validate.plain_trailing_call(xi, ns, w, b, eps,
                                                                  op == "rms_norm")
                            fast += plain is not None
                            fn = getattr(nbn, op)
                            got = _outcome(lambda: fn(*args, eps=eps))
                            ref = _outcome(lambda: fn(*args, eps=eps, device="cpu"))
                            assert got[0] == ref[0], (op, args, eps, got, ref)
                            if got[0] == "ok":
                                assert plain is None or ref[0] == "ok"
                                np.testing.assert_array_equal(got[1], ref[1])
                                assert got[1].dtype == ref[1].dtype
                            else:
                                assert plain is None and got[1] == ref[1], (op, args, eps)
    assert fast > 100  # the fast path did run


def test_layer_messages_say_how_to_build_the_layer():
    """A layer built for other features, or holding parameters of another dtype, says so and
    how to build it (issue 33); nan_policy='raise' names the policy and its alternatives."""
    raises(ValueError, "BatchNorm1d was built for 16 features but x has 12 channels",
           nbn.BatchNorm1d(16), np.ones((4, 12), np.float32))
    raises(ValueError, "BatchNorm2d was built for 3 features but x has 5 channels",
           nbn.BatchNorm2d(3, channel_axis=-1), np.ones((2, 4, 4, 5), np.float32))
    raises(TypeError, r"LayerNorm holds float32 parameters: build it with dtype='float64'",
           nbn.LayerNorm(16), np.ones((4, 16)))
    raises(TypeError, r"RMSNorm holds float32 parameters: build it with dtype='float64'",
           nbn.RMSNorm(16), np.ones((4, 16)), np.ones((4, 16)))
    raises(ValueError, r"The input contains nan values \(nan_policy='raise'; 'omit'",
           nbn.zscore, np.array([1.0, np.nan, 2.0]), nan_policy="raise")
