"""Property-based tests (hypothesis): random shapes, dtypes, groups, eps, affine on/off and
memory layouts, every op forward and backward against the float64 oracle.

derandomize=True makes hypothesis draw the same examples on every run, so a failure reproduces
and the suite is never flaky; the examples still cover far more combinations than the
hand-written cases in test_functional.py.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbanorm as nbn
from conftest import TOLERANCES
import oracle

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

LAYOUTS = ("C", "F", "strided", "transposed", "reversed")


def _layout(a, layout):
    """The same values as `a` in another memory layout (never a C-contiguous copy except 'C')."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":  # every other element of a bigger buffer
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "transposed":
        return np.ascontiguousarray(a.T).T
    return np.ascontiguousarray(a[..., ::-1])[..., ::-1]  # negative strides


@st.composite
def cases(draw, min_spatial_dims=0):
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 5))
    groups = draw(st.integers(1, 4))
    per_group = draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 7), min_size=min_spatial_dims, max_size=3)))
    shape = (n, groups * per_group) + spatial
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    affine = draw(st.sampled_from(["both", "weight", "none"]))
    layout = draw(st.sampled_from(LAYOUTS))
    dy_layout = draw(st.sampled_from(LAYOUTS))
    offset = draw(st.sampled_from([0.0, 3.0, -50.0]))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2.0 + offset).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return dict(dtype=dtype, shape=shape, groups=groups, eps=eps, affine=affine, rng=rng,
                x=_layout(x, layout), dy=_layout(dy, dy_layout), offset=offset)


def _params(case, pshape):
    rng, dtype = case["rng"], case["dtype"]
    w = rng.standard_normal(pshape).astype(dtype) if case["affine"] != "none" else None
    b = rng.standard_normal(pshape).astype(dtype) if case["affine"] == "both" else None
    return w, b


def _compare(got, ref, case, x_before, n_per_stat):
    """y, dx against the oracle with float32/float64 tolerances; dweight/dbias with the
    tolerance of a sum over sqrt(number of terms) and the input unmodified."""
    dtype = case["dtype"]
    rtol, atol = TOLERANCES[dtype]
    y, dx, dw, db = got
    # Outputs are O(1) (or O(|weight| + |bias|)); gradients scale with rstd, and the centring
    # cancels |offset|/std digits of the input in float32.
    ulp_scale = 1.0 + abs(case["offset"])
    np.testing.assert_allclose(y, ref["y"], rtol=rtol * ulp_scale, atol=atol * ulp_scale * 4)
    dscale = 1.0 + np.abs(ref["dx"]).max(initial=0.0)
    np.testing.assert_allclose(dx, ref["dx"], rtol=rtol * ulp_scale,
                               atol=atol * ulp_scale * dscale * 4)
    sum_scale = np.sqrt(max(1, case["x"].size)) * ulp_scale * 4
    if dw is not None:
        np.testing.assert_allclose(dw, ref["dweight"], rtol=rtol * ulp_scale,
                                   atol=atol * sum_scale)
    if db is not None:
        np.testing.assert_allclose(db, ref["dbias"], rtol=rtol, atol=atol * sum_scale)
    np.testing.assert_array_equal(case["x"], x_before)
    for a in (y, dx):
        assert a.dtype == dtype and a.shape == case["shape"]


@SETTINGS
@given(cases(), st.booleans())
def test_layer_and_rms_norm(case, rms):
    x, dy = case["x"], case["dy"]
    k = 1 + (x.ndim > 2 and case["groups"] % 2 == 0)  # normalise over 1 or 2 trailing dims
    nshape = x.shape[x.ndim - k:]
    w, b = _params(case, nshape)
    x_before = x.copy()
    if rms:
        b = None
        y, saved = nbn.rms_norm_forward(x, nshape, w, eps=case["eps"])
        dx, dw = nbn.rms_norm_backward(dy, saved)
        db = None
        ref = oracle.rms_norm(x, nshape, w, case["eps"], dy)
    else:
        y, saved = nbn.layer_norm_forward(x, nshape, w, b, eps=case["eps"])
        dx, dw, db = nbn.layer_norm_backward(dy, saved)
        ref = oracle.layer_norm(x, nshape, w, b, case["eps"], dy)
    assert (dw is None) == (w is None) and (db is None) == (b is None)
    _compare((y, dx, dw, db), ref, case, x_before, int(np.prod(nshape)))


@SETTINGS
@given(cases())
def test_group_norm(case):
    x, dy = case["x"], case["dy"]
    w, b = _params(case, x.shape[1])
    x_before = x.copy()
    y, saved = nbn.group_norm_forward(x, case["groups"], w, b, eps=case["eps"])
    dx, dw, db = nbn.group_norm_backward(dy, saved)
    ref = oracle.group_norm(x, case["groups"], w, b, case["eps"], dy)
    assert saved.mean.shape == (x.shape[0], case["groups"])
    _compare((y, dx, dw, db), ref, case, x_before, x.size // x.shape[0] // case["groups"])


@SETTINGS
@given(cases(min_spatial_dims=1))
def test_instance_norm(case):
    x, dy = case["x"], case["dy"]
    if np.prod(x.shape[2:]) == 1:
        with pytest.raises(ValueError, match="more than 1 spatial element"):
            nbn.instance_norm(x)
        return
    w, b = _params(case, x.shape[1])
    x_before = x.copy()
    y, saved = nbn.instance_norm_forward(x, weight=w, bias=b, eps=case["eps"])
    dx, dw, db = nbn.instance_norm_backward(dy, saved)
    ref = oracle.instance_norm(x, w, b, case["eps"], dy)
    _compare((y, dx, dw, db), ref, case, x_before, int(np.prod(x.shape[2:])))


@SETTINGS
@given(cases(), st.booleans())
def test_batch_norm(case, training):
    x, dy = case["x"], case["dy"]
    C = x.shape[1]
    n = x.size // C
    w, b = _params(case, C)
    rng, dtype = case["rng"], case["dtype"]
    running_mean = (rng.standard_normal(C) + case["offset"]).astype(dtype)
    running_var = (rng.random(C) * 4 + 0.1).astype(dtype)
    rm0, rv0 = running_mean.copy(), running_var.copy()
    x_before = x.copy()
    if training and n == 1:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            nbn.batch_norm(x, running_mean, running_var, w, b, training=True)
        np.testing.assert_array_equal(running_mean, rm0)
        return
    y, saved = nbn.batch_norm_forward(x, running_mean, running_var, w, b, training=training,
                                     momentum=0.25, eps=case["eps"])
    dx, dw, db = nbn.batch_norm_backward(dy, saved)
    if training:
        ref = oracle.batch_norm_train(x, w, b, case["eps"], dy)
        rtol = TOLERANCES[dtype][0] * (1 + abs(case["offset"]))
        np.testing.assert_allclose(running_mean, 0.75 * rm0.astype(np.float64)
                                   + 0.25 * ref["mean"], rtol=rtol * 4, atol=rtol * 4)
        np.testing.assert_allclose(running_var, 0.75 * rv0.astype(np.float64)
                                   + 0.25 * ref["var_unbiased"], rtol=rtol * 4, atol=rtol * 4)
    else:
        ref = oracle.batch_norm_eval(x, rm0, rv0, w, b, case["eps"], dy)
        np.testing.assert_array_equal(running_mean, rm0)
        np.testing.assert_array_equal(running_var, rv0)
    _compare((y, dx, dw, db), ref, case, x_before, n)
