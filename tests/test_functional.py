"""Every op, forward and backward, against the float64 oracle on awkward shapes and layouts."""
import numpy as np
import pytest

import numbanorm as nbn
from conftest import assert_close
import oracle

DTYPES = [np.float32, np.float64]


def _data(rng, shape, dtype, mean=0.0, std=1.0):
    return (rng.standard_normal(shape) * std + mean).astype(dtype)


def _check(res, ref, dtype, keys=("y",)):
    for k in keys:
        assert_close(res[k], ref[k], dtype, name=k)


def _run(fwd, bwd, x, dy, args, kwargs):
    y, saved = fwd(x, *args, **kwargs)
    out = bwd(dy, saved)
    return y, saved, out


LAYER_CASES = [
    ((1, 8), (8,)), ((7, 13), (13,)), ((3, 5, 31), (31,)), ((2, 3, 4, 5), (4, 5)),
    ((5, 1), (1,)), ((4, 2000), (2000,)), ((2, 3, 1031), 1031), ((300, 64), (64,)),
    ((9, 4096), (4096,)),  # long rows, parallel: rows in pairs (cpu.rows.forward_pairs), odd R
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,nshape", LAYER_CASES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm(rng, dtype, shape, nshape, affine):
    x = _data(rng, shape, dtype, mean=3.0, std=2.0)
    dy = _data(rng, shape, dtype)
    ns = (nshape,) if isinstance(nshape, int) else nshape
    w = _data(rng, ns, dtype) if affine in ("both", "weight") else None
    b = _data(rng, ns, dtype) if affine in ("both", "bias") else None
    y, saved = nbn.layer_norm_forward(x, nshape, w, b, eps=1e-5)
    dx, dw, db = nbn.layer_norm_backward(dy, saved)
    ref = oracle.layer_norm(x, nshape, w, b, 1e-5, dy)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(saved.mean, ref["mean"], dtype, 3.0, name="mean")
    assert_close(saved.rstd, ref["rstd"], dtype, name="rstd")
    assert saved.mean.shape == shape[:len(shape) - len(ns)]
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(nbn.layer_norm(x, nshape, w, b), ref["y"], dtype, name="plain y")
    if w is not None:
        assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
    else:
        assert dw is None
    if b is not None:
        assert db.shape == b.shape  # also without a weight (was flattened: (4, 5) -> (20,))
        assert_close(db, ref["dbias"], dtype, np.sqrt(x.size), name="dbias")
    else:
        assert db is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,nshape", LAYER_CASES)
def test_rms_norm(rng, dtype, shape, nshape):
    x = _data(rng, shape, dtype, mean=1.0)
    dy = _data(rng, shape, dtype)
    ns = (nshape,) if isinstance(nshape, int) else nshape
    w = _data(rng, ns, dtype)
    y, saved = nbn.rms_norm_forward(x, nshape, w)
    dx, dw = nbn.rms_norm_backward(dy, saved)
    ref = oracle.rms_norm(x, nshape, w, None, dy)
    assert saved.mean is None
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(saved.rstd, ref["rstd"], dtype, name="rstd")
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
    y2 = nbn.rms_norm(x, nshape, eps=1e-3)
    assert_close(y2, oracle.rms_norm(x, nshape, None, 1e-3)["y"], dtype, name="eps")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["serial", "parallel", "pairs"])
def test_row_gradients_of_chunks_longer_than_a_block(rng, monkeypatch, dtype, kernel):
    """dweight/dbias of 2*BLOCK + 3 rows in one partial (MAX_PARTIALS = 1), in each rows
    backward kernel. Where the parameter terms are summed in x's dtype (the pairs kernel, run
    on short rows here, and the parallel kernel on float32) the rows are cut into chunks of
    at most BLOCK rows all the same: three here, the last one odd."""
    from numbanorm.cpu import _host as cpu_host
    from numbanorm._config import BLOCK
    monkeypatch.setattr(cpu_host, "MAX_PARTIALS", 1)
    monkeypatch.setattr(cpu_host, "SERIAL_MAX_ELEMENTS", 1 << 30 if kernel == "serial" else 0)
    monkeypatch.setattr(cpu_host, "ROW_PAIR_MIN_BYTES", 1 if kernel == "pairs" else 1 << 30)
    shape = (2 * BLOCK + 3, 6)
    x = _data(rng, shape, dtype, mean=3.0, std=2.0)
    dy = _data(rng, shape, dtype, mean=0.5)
    w = _data(rng, 6, dtype, mean=1.0)
    b = _data(rng, 6, dtype)
    _, saved = nbn.layer_norm_forward(x, 6, w, b)
    dx, dw, db = nbn.layer_norm_backward(dy, saved)
    ref = oracle.layer_norm(x, 6, w, b, 1e-5, dy)
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(dw, ref["dweight"], dtype, np.sqrt(shape[0]), name="dweight")
    assert_close(db, ref["dbias"], dtype, np.sqrt(shape[0]), name="dbias")
    _, saved = nbn.rms_norm_forward(x, 6, w)
    dx, dw = nbn.rms_norm_backward(dy, saved)
    ref = oracle.rms_norm(x, 6, w, None, dy)
    assert_close(dx, ref["dx"], dtype, name="rms dx")
    assert_close(dw, ref["dweight"], dtype, np.sqrt(shape[0]), name="rms dweight")


GROUP_CASES = [
    ((2, 6, 5), 3), ((3, 4), 2), ((1, 7, 3, 5), 7), ((2, 6, 4, 3, 2), 1), ((4, 10, 1), 5),
    ((2, 64, 9, 9), 32), ((3, 6, 400), 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,groups", GROUP_CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm(rng, dtype, shape, groups, affine):
    x = _data(rng, shape, dtype, mean=-2.0, std=3.0)
    dy = _data(rng, shape, dtype)
    C = shape[1]
    w = _data(rng, C, dtype) if affine else None
    b = _data(rng, C, dtype) if affine else None
    y, saved = nbn.group_norm_forward(x, groups, w, b, eps=1e-4)
    dx, dw, db = nbn.group_norm_backward(dy, saved)
    ref = oracle.group_norm(x, groups, w, b, 1e-4, dy)
    assert saved.mean.shape == (shape[0], groups)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(saved.mean, ref["mean"], dtype, 2.0, name="mean")
    assert_close(saved.rstd, ref["rstd"], dtype, name="rstd")
    assert_close(dx, ref["dx"], dtype, name="dx")
    if affine:
        assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
        assert_close(db, ref["dbias"], dtype, np.sqrt(x.size), name="dbias")
    else:
        assert dw is None and db is None


INSTANCE_SHAPES = [(2, 3, 5), (1, 4, 7, 3), (3, 2, 2, 3, 4), (2, 5, 129), (2, 3, 70, 70)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", INSTANCE_SHAPES)
def test_instance_norm(rng, dtype, shape):
    x = _data(rng, shape, dtype, mean=5.0)
    dy = _data(rng, shape, dtype)
    C = shape[1]
    w = _data(rng, C, dtype)
    b = _data(rng, C, dtype)
    y, saved = nbn.instance_norm_forward(x, weight=w, bias=b)
    dx, dw, db = nbn.instance_norm_backward(dy, saved)
    ref = oracle.instance_norm(x, w, b, 1e-5, dy)
    assert saved.rstd.shape == shape[:2]
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(saved.mean, ref["mean"], dtype, 5.0, name="mean")
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
    assert_close(db, ref["dbias"], dtype, np.sqrt(x.size), name="dbias")


@pytest.mark.parametrize("dtype", DTYPES)
def test_instance_norm_running_stats(rng, dtype):
    x = _data(rng, (3, 4, 11), dtype, mean=2.0)
    rm = np.zeros(4, dtype)
    rv = np.ones(4, dtype)
    nbn.instance_norm(x, rm, rv, momentum=0.3)
    xg = x.astype(np.float64)
    mean_ref = 0.3 * xg.mean(axis=2).mean(axis=0)
    var_ref = 0.7 + 0.3 * xg.var(axis=2, ddof=1).mean(axis=0)
    assert_close(rm, mean_ref, dtype, name="running_mean")
    assert_close(rv, var_ref, dtype, name="running_var")
    # eval: normalise with the running statistics, backward through fixed statistics
    dy = _data(rng, x.shape, dtype)
    w = _data(rng, 4, dtype)
    y, saved = nbn.instance_norm_forward(x, rm, rv, w, None, use_input_stats=False)
    dx, dw, db = nbn.instance_norm_backward(dy, saved)
    ref = oracle.batch_norm_eval(x, rm, rv, w, None, 1e-5, dy)
    assert saved.mean.shape == (3, 4)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
    assert db is None


BATCH_SHAPES = [(5, 3), (2, 7), (64, 5), (3, 4, 5), (2, 3, 2, 3), (4, 2, 3, 3, 3), (3, 5, 70),
                (2, 3, 9, 11), (1000, 17), (130, 3, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BATCH_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training(rng, dtype, shape, affine):
    x = _data(rng, shape, dtype, mean=4.0, std=0.5)
    dy = _data(rng, shape, dtype)
    C = shape[1]
    w = _data(rng, C, dtype) if affine else None
    b = _data(rng, C, dtype) if affine else None
    rm = _data(rng, C, dtype)
    rv = np.abs(_data(rng, C, dtype)) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, saved = nbn.batch_norm_forward(x, rm, rv, w, b, training=True, momentum=0.2, eps=1e-3)
    dx, dw, db = nbn.batch_norm_backward(dy, saved)
    ref = oracle.batch_norm_train(x, w, b, 1e-3, dy)
    assert saved.mean.shape == (C,)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(saved.mean, ref["mean"], dtype, 4.0, name="mean")
    assert_close(saved.rstd, ref["rstd"], dtype, name="rstd")
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(rm, 0.8 * rm0.astype(np.float64) + 0.2 * ref["mean"], dtype, 4.0, "running_mean")
    assert_close(rv, 0.8 * rv0.astype(np.float64) + 0.2 * ref["var_unbiased"], dtype, 1.0,
                 "running_var")
    if affine:
        assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
        assert_close(db, ref["dbias"], dtype, np.sqrt(x.size), name="dbias")
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2100, 4, 4), (2, 1100, 5, 5)])
def test_batch_norm_wide_rows_take_slabs(rng, dtype, shape):
    """Short slabs of many channels (C*S too wide for a column block of COLUMN_MIN_ROWS rows)
    run the parallel slab kernels, forward and backward, against the oracle."""
    from numbanorm.cpu import _host as cpu_host
    x = _data(rng, shape, dtype, mean=4.0, std=0.5)
    x3 = x.reshape(shape[0], shape[1], -1)
    assert cpu_host._slabs(x3, cpu_host.SLAB_MIN)
    assert cpu_host._slabs(x3, cpu_host.SLAB_MIN_BACKWARD)
    assert not cpu_host._slabs(x3[:, :16], cpu_host.SLAB_MIN)  # narrow: columns
    assert x.size > cpu_host.SERIAL_MAX_ELEMENTS  # the parallel kernels,
    assert not cpu_host._fused(x3, cpu_host.SLAB_MIN)  # not the fused serial columns
    assert not cpu_host._fused(x3, cpu_host.SLAB_MIN_BACKWARD)
    dy = _data(rng, shape, dtype)
    C = shape[1]
    w = _data(rng, C, dtype)
    b = _data(rng, C, dtype)
    y, saved = nbn.batch_norm_forward(x, None, None, w, b, training=True)
    dx, dw, db = nbn.batch_norm_backward(dy, saved)
    ref = oracle.batch_norm_train(x, w, b, 1e-5, dy)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(saved.mean, ref["mean"], dtype, 4.0, name="mean")
    assert_close(saved.rstd, ref["rstd"], dtype, name="rstd")
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
    assert_close(db, ref["dbias"], dtype, np.sqrt(x.size), name="dbias")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 5000), (3, 1500, 3)])
def test_batch_norm_fused_wide_rows_in_strips(rng, dtype, shape):
    """The fused serial kernel reduces rows wider than a strip (COLUMN_STRIP_BYTES) strip by
    strip, the last one partial: statistics and y against the oracle."""
    from numbanorm.cpu import _host as cpu_host
    x = _data(rng, shape, dtype, mean=4.0, std=0.5)
    x3 = x.reshape(shape[0], shape[1], -1)
    M = x3.shape[1] * x3.shape[2]
    assert cpu_host._fused(x3, cpu_host.SLAB_MIN)
    assert M % cpu_host._column_strip(M, x.itemsize) and M > 2 * cpu_host._column_strip(
        M, x.itemsize)
    C = shape[1]
    w = _data(rng, C, dtype)
    b = _data(rng, C, dtype)
    y, saved = nbn.batch_norm_forward(x, None, None, w, b, training=True)
    ref = oracle.batch_norm_train(x, w, b, 1e-5)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(saved.mean, ref["mean"], dtype, 4.0, name="mean")
    assert_close(saved.rstd, ref["rstd"], dtype, name="rstd")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (3, 4, 5), (2, 3, 9, 11), (3, 5, 70)])
def test_batch_norm_eval(rng, dtype, shape):
    x = _data(rng, shape, dtype, mean=1.0)
    dy = _data(rng, shape, dtype)
    C = shape[1]
    w, b = _data(rng, C, dtype), _data(rng, C, dtype)
    rm = _data(rng, C, dtype)
    rv = np.abs(_data(rng, C, dtype)) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, saved = nbn.batch_norm_forward(x, rm, rv, w, b, training=False)
    dx, dw, db = nbn.batch_norm_backward(dy, saved)
    ref = oracle.batch_norm_eval(x, rm, rv, w, b, 1e-5, dy)
    assert_close(y, ref["y"], dtype, name="y")
    assert_close(dx, ref["dx"], dtype, name="dx")
    assert_close(dw, ref["dweight"], dtype, np.sqrt(x.size), name="dweight")
    assert_close(db, ref["dbias"], dtype, np.sqrt(x.size), name="dbias")
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)


def _layouts(rng, shape, dtype):
    base = _data(rng, shape, dtype, mean=1.0)
    fortran = np.asfortranarray(base)
    big = _data(rng, tuple(2 * s for s in shape), dtype)
    strided = big[tuple(slice(None, None, 2) for _ in shape)]
    strided[...] = base
    readonly = base.copy()
    readonly.flags.writeable = False
    return {"fortran": fortran, "strided": strided, "readonly": readonly}


OPS = {
    "layer_norm": (lambda x: nbn.layer_norm_forward(x, x.shape[-1]), nbn.layer_norm_backward),
    "rms_norm": (lambda x: nbn.rms_norm_forward(x, x.shape[-2:]), nbn.rms_norm_backward),
    "group_norm": (lambda x: nbn.group_norm_forward(x, 2), nbn.group_norm_backward),
    "instance_norm": (lambda x: nbn.instance_norm_forward(x), nbn.instance_norm_backward),
    "batch_norm": (lambda x: nbn.batch_norm_forward(x, training=True), nbn.batch_norm_backward),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(OPS))
def test_layouts_match_contiguous(rng, dtype, op):
    """Fortran-ordered, strided and read-only inputs give exactly the contiguous result, and
    are not modified."""
    fwd, bwd = OPS[op]
    shape = (3, 4, 5, 6)
    dy = _data(rng, shape, dtype)
    for name, x in _layouts(rng, shape, dtype).items():
        before = x.copy()
        c = np.ascontiguousarray(x)
        y_ref, s_ref = fwd(c)
        g_ref = bwd(dy, s_ref)
        y, s = fwd(x)
        g = bwd(np.asfortranarray(dy), s)
        np.testing.assert_array_equal(y, y_ref, err_msg=name)
        np.testing.assert_array_equal(g[0], g_ref[0], err_msg=name)
        np.testing.assert_array_equal(x, before, err_msg=name)


@pytest.mark.parametrize("op", sorted(OPS))
def test_out_argument(rng, op):
    fwd = {"layer_norm": lambda x, **k: nbn.layer_norm(x, x.shape[-1], **k),
           "rms_norm": lambda x, **k: nbn.rms_norm(x, x.shape[-1], **k),
           "group_norm": lambda x, **k: nbn.group_norm(x, 2, **k),
           "instance_norm": lambda x, **k: nbn.instance_norm(x, **k),
           "batch_norm": lambda x, **k: nbn.batch_norm(x, training=True, **k)}[op]
    x = _data(rng, (3, 4, 5), np.float32)
    ref = fwd(x)
    out = np.empty_like(x)
    assert fwd(x, out=out) is out
    np.testing.assert_array_equal(out, ref)
    fortran_out = np.empty(x.shape, x.dtype, order="F")
    assert fwd(x, out=fortran_out) is fortran_out
    np.testing.assert_array_equal(fortran_out, ref)
    inplace = x.copy()
    assert fwd(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, ref)


DX_OUT_CASES = [
    ("layer_norm", (7, 13)), ("layer_norm", (600, 64)),  # serial, parallel rows
    ("rms_norm", (3, 4, 5, 6)), ("group_norm", (3, 4, 5, 6)), ("instance_norm", (3, 4, 5, 6)),
    ("batch_norm", (3, 4, 5)),  # fused serial columns
    ("batch_norm", (4, 16, 32, 32)),  # parallel slabs
    ("batch_norm", (2048, 160)),  # parallel columns
]


@pytest.mark.parametrize("op,shape", DX_OUT_CASES)
def test_dx_out_argument(rng, monkeypatch, op, shape):
    """dx_out= receives dx on every backward path (C or Fortran order), equal to the
    allocating call and to the oracle; dweight/dbias are unchanged; a C-contiguous dx_out is
    written by the kernel itself (no copy)."""
    fwd, bwd = OPS[op]
    ref_fn = {"layer_norm": lambda x, dy: oracle.layer_norm(x, x.shape[-1], dy=dy),
              "rms_norm": lambda x, dy: oracle.rms_norm(x, x.shape[-2:], dy=dy),
              "group_norm": lambda x, dy: oracle.group_norm(x, 2, dy=dy),
              "instance_norm": lambda x, dy: oracle.instance_norm(x, dy=dy),
              "batch_norm": lambda x, dy: oracle.batch_norm_train(x, dy=dy)}[op]
    x = _data(rng, shape, np.float32)
    dy = _data(rng, shape, np.float32)
    _, saved = fwd(x)
    fresh = bwd(dy, saved)
    assert_close(fresh[0], ref_fn(x, dy)["dx"], np.float32, name="dx")
    copies = []
    real_copyto = np.copyto
    for order in "CF":
        dx_out = np.full(shape, np.nan, np.float32, order=order)
        monkeypatch.setattr(np, "copyto", lambda dst, src, **k: (copies.append(order),
                                                                  real_copyto(dst, src, **k)))
        got = bwd(dy, saved, dx_out=dx_out)
        monkeypatch.undo()
        assert got[0] is dx_out
        np.testing.assert_array_equal(dx_out, fresh[0], err_msg=order)
        for g, f in zip(got[1:], fresh[1:]):
            np.testing.assert_array_equal(g, f)
    assert copies == ["F"]  # a C-contiguous dx_out is written by the kernel, not copied into


@pytest.mark.parametrize("op", sorted(OPS))
def test_zero_size_batch(op):
    fwd, bwd = OPS[op]
    x = np.zeros((0, 4, 5, 6), np.float32)
    y, saved = fwd(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    dx = bwd(np.zeros_like(x), saved)[0]
    assert dx.shape == x.shape


def test_saved_is_immutable_and_typed(rng):
    x = _data(rng, (4, 6), np.float32)
    _, saved = nbn.layer_norm_forward(x, 6)
    assert saved.mean.dtype == np.float32 and saved.rstd.dtype == np.float32
    with pytest.raises(AttributeError):
        saved.mean = None
    _, saved64 = nbn.layer_norm_forward(x.astype(np.float64), 6)
    assert saved64.rstd.dtype == np.float64


@pytest.mark.parametrize("op", ["layer_norm", "group_norm", "batch_norm", "rms_norm"])
def test_finite_differences(rng, op):
    """Analytic gradients of loss = sum(y * dy) against central differences in float64."""
    shape = (3, 4, 5)
    x = _data(rng, shape, np.float64, mean=0.5)
    dy = _data(rng, shape, np.float64)
    w = _data(rng, {"layer_norm": 5, "rms_norm": 5}.get(op, 4), np.float64)
    b = _data(rng, w.shape, np.float64)
    if op == "layer_norm":
        f = lambda x, w, b: nbn.layer_norm_forward(x, 5, w, b)  # noqa: E731
        bwd = nbn.layer_norm_backward
    elif op == "rms_norm":
        f = lambda x, w, b: nbn.rms_norm_forward(x, 5, w)  # noqa: E731
        bwd = lambda dy, s: nbn.rms_norm_backward(dy, s) + (None,)  # noqa: E731
    elif op == "group_norm":
        f = lambda x, w, b: nbn.group_norm_forward(x, 2, w, b)  # noqa: E731
        bwd = nbn.group_norm_backward
    else:
        f = lambda x, w, b: nbn.batch_norm_forward(x, None, None, w, b, True)  # noqa: E731
        bwd = nbn.batch_norm_backward
    _, saved = f(x, w, b)
    dx, dw, db = bwd(dy, saved)

    def loss(x_, w_, b_):
        return float((f(x_, w_, b_)[0] * dy).sum())

    h = 1e-6
    for idx in [(0, 0, 0), (1, 2, 3), (2, 3, 4), (0, 1, 4)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num = (loss(xp, w, b) - loss(xm, w, b)) / (2 * h)
        assert abs(num - dx[idx]) < 1e-6 * max(1.0, abs(num)), (idx, num, dx[idx])
    for j in range(w.size):
        wp, wm = w.copy(), w.copy()
        wp[j] += h
        wm[j] -= h
        num = (loss(x, wp, b) - loss(x, wm, b)) / (2 * h)
        assert abs(num - dw[j]) < 1e-6 * max(1.0, abs(num)), (j, num, dw[j])
        if db is not None:
            bp, bm = b.copy(), b.copy()
            bp[j] += h
            bm[j] -= h
            num = (loss(x, w, bp) - loss(x, w, bm)) / (2 * h)
            assert abs(num - db[j]) < 1e-6 * max(1.0, abs(num)), (j, num, db[j])


def test_saved_record_is_read_only_and_stats_are_stable(rng):
    """Saved's public fields cannot be reassigned; mean/rstd, made on first access on the CPU
    rows path, are the same arrays on every access and match the oracle."""
    x = _data(rng, (3, 7), np.float32)
    _, saved = nbn.layer_norm_forward(x, 7)
    for name in ("op", "mean", "rstd"):
        with pytest.raises(AttributeError):
            setattr(saved, name, None)
    with pytest.raises(AttributeError):
        saved.extra = 1
    assert saved.mean is saved.mean and saved.rstd is saved.rstd
    ref = oracle.layer_norm(x, 7)
    assert_close(saved.mean, ref["mean"], np.float32, 3.0, name="mean")
    assert "layer_norm" in repr(saved) and "rstd=" in repr(saved)
