"""`numbanorm bench`: each op forward and backward on the standard shapes, timed against a
hand-vectorised NumPy version and PyTorch (when installed) in the same run.

Per case: the median time of `repeats` timed runs (each run loops enough calls to last
~`min_run` seconds), effective GB/s (forward: read x + write y; backward: read x and dy + write
dx), the percentage of this machine's memory bandwidth (a parallel triad measured at start-up,
read + write counted), the speed-up over NumPy and PyTorch, and the largest error against a
float64 computation, relative to the largest reference value. The implementations of a case
are timed interleaved, one timed run of each per repeat, and a speed-up is the median over
repeats of their time / ours in the same repeat: on a shared machine the load of other
processes then falls on both sides of a ratio alike.
16-bit cases (--dtype float16 / bfloat16, the standard shapes) add numbanorm's own float32
time on the same values ('vs f32': float32 time / 16-bit time) and NumPy's route through
float32 ('vs np-f32': x.astype(np.float32), the float32 expression, the result cast back, all
inside the timed call); 'vs numpy' is NumPy in the 16-bit dtype itself, and PyTorch runs its
16-bit CPU kernels.
Every implementation allocates its outputs on every call, except numbanorm under `--out`
(preallocated=True), whose forward writes into an out= array and backward into a dx_out= array,
each made once: outputs larger than malloc's mmap threshold (32 MiB at most) come from the
operating system zeroed on every call, a cost that depends on the machine, not on the kernel,
and that out= and dx_out= avoid.
"""
import json
import math
import sys
import time

import numpy as np
from numba import njit, prange

from . import adaptive as A
from . import functional as F

# (op, shape, dtype) of the standard cases
STANDARD = [
    ("batch_norm", (32, 64, 56, 56), "float32"), ("batch_norm", (128, 256, 14, 14), "float32"),
    ("batch_norm", (8, 32, 32, 32), "float32"), ("batch_norm", (4096, 1024), "float32"),
    ("layer_norm", (4096, 768), "float32"), ("layer_norm", (8, 512, 4096), "float32"),
    ("layer_norm", (64, 1024), "float32"), ("layer_norm", (16384, 128), "float32"),
    ("group_norm", (32, 64, 56, 56), "float32"), ("group_norm", (8, 256, 32, 32), "float32"),
    ("instance_norm", (16, 64, 128, 128), "float32"), ("instance_norm", (8, 32, 32, 32), "float32"),
    ("rms_norm", (8, 512, 4096), "float32"),
    ("layer_norm", (4096, 768), "float64"), ("batch_norm", (32, 64, 56, 56), "float64"),
    ("switch_norm", (32, 64, 56, 56), "float32"), ("switch_norm", (8, 256, 28, 28), "float32"),
    ("batch_instance_norm", (32, 64, 56, 56), "float32"),
    ("batch_instance_norm", (8, 256, 28, 28), "float32"),
    ("local_response_norm", (32, 64, 56, 56), "float32"),
    ("local_response_norm", (8, 256, 28, 28), "float32"),
    # channels-last images: shape (N, H, W, C), channel_axis=-1 (PyTorch: a channels_last tensor)
    ("batch_norm_nhwc", (32, 56, 56, 64), "float32"),
    ("batch_norm_nhwc", (8, 28, 28, 256), "float32"),
    ("group_norm_nhwc", (32, 56, 56, 64), "float32"),
    ("group_norm_nhwc", (8, 28, 28, 256), "float32"),
    ("instance_norm_nhwc", (32, 56, 56, 64), "float32"),
    ("instance_norm_nhwc", (8, 28, 28, 256), "float32"),
    # the fused residual add + norm: x and residual in, (y, h) out (NumPy: add, then the norm)
    ("add_layer_norm", (4096, 768), "float32"), ("add_layer_norm", (8, 512, 4096), "float32"),
    ("add_rms_norm", (4096, 768), "float32"), ("add_rms_norm", (8, 512, 4096), "float32"),
]
# batch_norm with many channels of few values (late CNN stages, wide (N, C) features): not in the
# issue's standard list, tracked by the asv suite (`numbanorm bench --shape` runs any of them).
# Their column layout ran 0.2-0.8x PyTorch's speed until the wide-row changes of 2026-11-23.
WIDE = [("batch_norm", (16, 2048, 7, 7), "float32"), ("batch_norm", (32, 4096, 3, 3), "float32"),
        ("batch_norm", (64, 65536), "float32")]
# The tiny cases where per-call overhead decides.
TINY = [("layer_norm", (1, 8), "float32"), ("layer_norm", (64, 1024), "float32"),
        ("batch_norm", (8, 32, 32, 32), "float32")]
OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "switch_norm",
       "batch_instance_norm", "local_response_norm", "batch_norm_nhwc", "group_norm_nhwc",
       "instance_norm_nhwc", "add_layer_norm", "add_rms_norm")
# the ops whose parameters run along the last axis, and those without a bias
LAST_AXIS = ("layer_norm", "rms_norm", "batch_norm_nhwc", "group_norm_nhwc",
             "instance_norm_nhwc", "add_layer_norm", "add_rms_norm")
NO_BIAS = ("rms_norm", "add_rms_norm")
# streams of x's size each pass reads and writes (for GB/s): (forward, backward)
STREAMS = {"add_layer_norm": (4, 4), "add_rms_norm": (4, 4)}
# the adaptive ops' mixing logits (IN, LN, BN), and local_response_norm's AlexNet parameters
# (size, alpha, beta, k); batch_instance_norm's gate is _gate(C)
MEAN_WEIGHT = np.array([0.2, -0.1, 0.3])
VAR_WEIGHT = np.array([-0.2, 0.1, 0.4])
LRN = (5, 1e-4, 0.75, 1.0)
EPS = 1e-5
HALF = ("float16", "bfloat16")
DTYPES = ("float32", "float64") + HALF


def np_dtype(name):
    """The NumPy dtype of a dtype name; "bfloat16" is ml_dtypes', which must be installed."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise SystemExit("bfloat16 needs ml_dtypes: pip install ml_dtypes") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def half_cases(cases, dtypes, at=2):
    """The float32 cases of `cases` again in each 16-bit dtype of `dtypes`; a case is a tuple
    whose field `at` is its dtype name ((op, shape, dtype) here, the data suite's at 3)."""
    return [c[:at] + (d,) + c[at + 1:] for d in dtypes if d in HALF for c in cases
            if c[at] == "float32"]


def num_groups(C):
    return math.gcd(C, 32)


def _gate(C):
    """batch_instance_norm's gate in the bench: values spread over (0.2, 0.8)."""
    return 0.5 + 0.3 * np.sin(np.arange(C))


# ---------------------------------------------------------------------------------------------
# the three implementations of one case, each as (forward(), backward(state)) closures

def _param_shape(op, shape):
    return (shape[-1],) if op in LAST_AXIS else (shape[1],)


def residual_of(x):
    """The fused-add cases' residual (and their dh, of dy): made from x, so that every
    implementation builds the same one (x reversed along its last axis, halved)."""
    return np.ascontiguousarray(x[..., ::-1]) * x.dtype.type(0.5)


def _numpy_axes(op, shape):
    """x reshaped so that normalised axes are explicit, and those axes."""
    N, C = shape[0], shape[1] if len(shape) > 1 else 1
    if op in ("layer_norm", "rms_norm"):
        return (-1, shape[-1]), (1,), (1, shape[-1])
    if op.endswith("_nhwc"):  # (N, *spatial, C): channels last
        C = shape[-1]
        if op == "batch_norm_nhwc":
            return (N, -1, C), (0, 1), (1, 1, C)
        G = num_groups(C) if op == "group_norm_nhwc" else C
        return (N, -1, G, C // G), (1, 3), (1, 1, G, C // G)
    if op == "batch_norm":
        return (N, C, -1), (0, 2), (1, C, 1)
    G = num_groups(C) if op == "group_norm" else C
    return (N, G, C // G, -1), (2, 3), (1, G, C // G, 1)


def numpy_impl(op, x, w, b, dy, via=None):
    """Hand-vectorised NumPy, in x's dtype: two-pass mean and variance, centred backward.
    via: a dtype x and dy are converted to inside each call, and y and dx converted back from
    (NumPy's route for 16-bit data through float32)."""
    if op in _NUMPY_MORE:
        return _NUMPY_MORE[op](x, w, b, dy, via)
    if op.startswith("add_"):
        return _numpy_add_norm(op, x, w, b, dy, via)
    view, axes, pshape = _numpy_axes(op, x.shape)
    centered = op != "rms_norm"

    def cast(a):
        return a if via is None or a is None else a.astype(via)

    def back(a):
        return a if via is None else a.astype(x.dtype)

    wg = cast(w).reshape(pshape)
    bg = None if b is None else cast(b).reshape(pshape)

    def forward():
        xg = cast(x).reshape(view)
        xc = xg - xg.mean(axis=axes, keepdims=True) if centered else xg
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + EPS)
        xhat = xc * rstd
        y = xhat * wg if bg is None else xhat * wg + bg
        return back(y.reshape(x.shape)), (xhat, rstd)

    def backward(state):
        xhat, rstd = state
        dyg = cast(dy).reshape(xhat.shape)
        g = dyg * wg
        mgx = (g * xhat).mean(axis=axes, keepdims=True)
        dx = rstd * (g - g.mean(axis=axes, keepdims=True) - xhat * mgx) if centered \
            else rstd * (g - xhat * mgx)
        param_axes = tuple(a for a in range(xhat.ndim) if pshape[a] == 1)
        return (back(dx.reshape(x.shape)), (dyg * xhat).sum(axis=param_axes),
                dyg.sum(axis=param_axes))

    return forward, backward


def _numpy_switch_norm(x, w, b, dy, via):
    """switch_norm in NumPy (training, exact biased variances, IN/LN/BN), two-pass statistics
    per group; the backward by the chain rule through each group's mean and variance."""
    dt = via or x.dtype
    back = x.dtype
    N, C = x.shape[:2]
    groups = ((2,), (1, 2), (0, 2))  # IN, LN, BN axes of the (N, C, S) view
    mw = np.exp(MEAN_WEIGHT) / np.exp(MEAN_WEIGHT).sum()
    vw = np.exp(VAR_WEIGHT) / np.exp(VAR_WEIGHT).sum()
    wg = w.astype(dt).reshape(1, C, 1)
    bg = b.astype(dt).reshape(1, C, 1)

    def forward():
        xs = x.astype(dt).reshape(N, C, -1)
        mus = [xs.mean(axis=a, keepdims=True) for a in groups]
        var = sum(v * ((xs - m) ** 2).mean(axis=a, keepdims=True)
                  for v, m, a in zip(vw, mus, groups))
        mean = sum(k * m for k, m in zip(mw, mus))
        rstd = 1.0 / np.sqrt(var + EPS)
        y = (xs - mean) * rstd * wg + bg
        return y.reshape(x.shape).astype(back), (xs, mus, mean, rstd)

    def backward(state):
        xs, mus, mean, rstd = state
        g = dy.astype(dt).reshape(xs.shape) * wg
        dmean = -(g * rstd).sum(axis=2, keepdims=True)
        dvar = (g * (xs - mean)).sum(axis=2, keepdims=True) * (-0.5 * rstd ** 3)
        dx = g * rstd
        for k, (m, a) in enumerate(zip(mus, groups)):
            M = math.prod(xs.shape[i] for i in a)
            dx = dx + (mw[k] * dmean.sum(axis=a[:-1], keepdims=True) / M
                       + vw[k] * dvar.sum(axis=a[:-1], keepdims=True) * 2.0 * (xs - m) / M)
        return (dx.reshape(x.shape).astype(back),)

    return forward, backward


def _numpy_batch_instance_norm(x, w, b, dy, via):
    """batch_instance_norm in NumPy (training): BN and IN each by the textbook formulas."""
    dt = via or x.dtype
    back = x.dtype
    N, C = x.shape[:2]
    rho = _gate(C).astype(dt).reshape(1, C, 1)
    wg = w.astype(dt).reshape(1, C, 1)
    bg = b.astype(dt).reshape(1, C, 1)

    def norm(xs, axes):
        xc = xs - xs.mean(axis=axes, keepdims=True)
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + EPS)
        return xc * rstd, rstd

    def forward():
        xs = x.astype(dt).reshape(N, C, -1)
        (hb, rb), (hi, ri) = norm(xs, (0, 2)), norm(xs, (2,))
        y = (rho * hb + (1 - rho) * hi) * wg + bg
        return y.reshape(x.shape).astype(back), (hb, rb, hi, ri)

    def backward(state):
        hb, rb, hi, ri = state
        g = dy.astype(dt).reshape(hb.shape) * wg
        dx = 0.0
        for k, h, r, a in ((rho, hb, rb, (0, 2)), (1 - rho, hi, ri, (2,))):
            gk = g * k
            dx = dx + r * (gk - gk.mean(axis=a, keepdims=True)
                           - h * (gk * h).mean(axis=a, keepdims=True))
        return (dx.reshape(x.shape).astype(back),)

    return forward, backward


def _numpy_local_response_norm(x, w, b, dy, via):
    """local_response_norm in NumPy: window sums of squares from a cumulative sum over the
    zero-padded channels (PyTorch's window); the backward over the mirrored window."""
    size, alpha, beta, k = LRN
    dt = via or x.dtype
    back = x.dtype
    N, C = x.shape[:2]

    def window_sum(v, left):
        pad = np.zeros((N, C + size, v.shape[2]), dt)
        pad[:, 1 + left:1 + left + C] = v
        cs = np.cumsum(pad, axis=1)
        return cs[:, size:size + C] - cs[:, :C]

    def forward():
        xs = x.astype(dt).reshape(N, C, -1)
        d = window_sum(xs * xs, size // 2) / size * alpha + k
        y = xs / d ** beta
        return y.reshape(x.shape).astype(back), (xs, d)

    def backward(state):
        xs, d = state
        g = dy.astype(dt).reshape(xs.shape)
        t = window_sum(g * xs * d ** (-beta - 1), (size - 1) // 2)
        dx = g * d ** (-beta) - (2 * alpha * beta / size) * xs * t
        return (dx.reshape(x.shape).astype(back),)

    return forward, backward


def _numpy_add_norm(op, x, w, b, dy, via):
    """The residual add, then the norm, in NumPy (numbanorm's own unfused form is its
    add + layer_norm); the backward adds dh to the norm's dx."""
    r = residual_of(x)
    dh = residual_of(dy)
    inner = {}

    def forward():
        h = x + r
        inner["f"], inner["b"] = numpy_impl(op[4:], h, w, b, dy, via)
        y, state = inner["f"]()
        return y, (h, state)

    def backward(state):
        dx = inner["b"](state[1])[0]
        return (dx + dh,)

    return forward, backward


_NUMPY_MORE = {"switch_norm": _numpy_switch_norm,
               "batch_instance_norm": _numpy_batch_instance_norm,
               "local_response_norm": _numpy_local_response_norm}


def numbanorm_impl(op, x, w, b, dy, preallocated=False):
    """(forward_with_saved, backward(saved), plain_forward): the plain forward is what is timed
    against PyTorch's no-grad forward, like for like; the saved record feeds the backward.
    When preallocated, the plain forward writes into one out= array and the backward into one
    dx_out= array, both made here."""
    args = {
        "batch_norm": ((x, None, None, w, b, True, 0.1, EPS), F.batch_norm),
        "layer_norm": ((x, x.shape[-1], w, b, EPS), F.layer_norm),
        "rms_norm": ((x, x.shape[-1], w, EPS), F.rms_norm),
        "group_norm": ((x, num_groups(w.shape[0]), w, b, EPS), F.group_norm),
        "instance_norm": ((x, None, None, w, b, True, 0.1, EPS), F.instance_norm),
        "switch_norm": ((x, MEAN_WEIGHT, VAR_WEIGHT, None, None, w, b, True, 0.1, EPS),
                        A.switch_norm),
        "batch_instance_norm": ((x, _gate(x.shape[1]).astype(w.dtype), None, None, w, b,
                                 True, 0.1, EPS), A.batch_instance_norm),
        "local_response_norm": ((x,) + LRN, F.local_response_norm),
    }
    out = np.empty_like(x) if preallocated else None
    dx_out = np.empty_like(x) if preallocated else None
    if op.startswith("add_"):
        return _numbanorm_add_norm(op, x, w, b, dy, out, dx_out)
    kwargs = {}
    if op.endswith("_nhwc"):
        op = op[:-5]
        kwargs = {"channel_axis": -1}
    call_args, plain = args[op]
    module = A if op in A.__all__ else F
    forward = getattr(module, f"{op}_forward")
    backward = getattr(module, f"{op}_backward")

    def run_backward(saved):
        result = backward(dy, saved, dx_out=dx_out)
        return result if isinstance(result, tuple) else (result,)
    return (lambda: forward(*call_args, **kwargs), run_backward,
            lambda: plain(*call_args, out=out, **kwargs))


def _numbanorm_add_norm(op, x, w, b, dy, out, dx_out):
    """numbanorm_impl of the fused residual add + norm: the plain forward returns y (h written
    to a residual_out= array under preallocated), the backward takes dh."""
    r = residual_of(x)
    dh = residual_of(dy)
    h_out = None if out is None else np.empty_like(x)
    params = (w, b, EPS) if op == "add_layer_norm" else (w, EPS)
    forward = getattr(F, f"{op}_forward")
    plain = getattr(F, op)
    backward = getattr(F, f"{op}_backward")

    def run_forward():
        y, _, saved = forward(x, r, x.shape[-1], *params)
        return y, saved
    return (run_forward, lambda saved: backward(dy, saved, dh, dx_out=dx_out),
            lambda: plain(x, r, x.shape[-1], *params, out=out, residual_out=h_out)[0])


def _tensor(torch, a):
    """A PyTorch tensor on a's memory (bfloat16 through its int16 view)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def torch_impl(op, x, w, b, dy):
    import torch
    import torch.nn.functional as TF
    if op.startswith("add_") or op.endswith("_nhwc"):
        return _torch_layouts(op, torch, x, w, b, dy)
    xt = _tensor(torch, x).requires_grad_()
    wt = _tensor(torch, w).requires_grad_()
    bt = None if b is None else _tensor(torch, b).requires_grad_()
    dyt = _tensor(torch, dy)
    call = {
        "batch_norm": lambda: TF.batch_norm(xt, None, None, wt, bt, True, 0.1, EPS),
        "layer_norm": lambda: TF.layer_norm(xt, (x.shape[-1],), wt, bt, EPS),
        "rms_norm": lambda: TF.rms_norm(xt, (x.shape[-1],), wt, EPS),
        "group_norm": lambda: TF.group_norm(xt, num_groups(x.shape[1]), wt, bt, EPS),
        "instance_norm": lambda: TF.instance_norm(xt, None, None, wt, bt, True, 0.1, EPS),
        "local_response_norm": lambda: TF.local_response_norm(xt, *LRN),
    }.get(op) or _torch_reference(op, torch, xt, wt, bt)
    inputs = [t for t in (xt, wt, bt) if t is not None]
    if op == "local_response_norm":
        inputs = [xt]

    def forward():
        with torch.no_grad():
            return call()

    def backward(y):
        return torch.autograd.grad(y, inputs, dyt, retain_graph=True)

    return forward, backward, call


def _torch_layouts(op, torch, x, w, b, dy):
    """PyTorch for the channels-last cases (a channels_last tensor: the (N, H, W, C) memory
    permuted) and the fused-add ones (torch.add, then F.layer_norm / F.rms_norm; the backward
    through both outputs)."""
    TF = torch.nn.functional
    leaf = _tensor(torch, x).requires_grad_()
    wt = _tensor(torch, w).requires_grad_()
    bt = None if b is None else _tensor(torch, b).requires_grad_()
    L = x.shape[-1]
    if op.endswith("_nhwc"):
        dyt = _tensor(torch, dy).permute(0, 3, 1, 2)
        inputs = [t for t in (leaf, wt, bt) if t is not None]
        norm = {"batch_norm_nhwc": lambda t: TF.batch_norm(t, None, None, wt, bt, True, 0.1, EPS),
                "group_norm_nhwc": lambda t: TF.group_norm(t, num_groups(L), wt, bt, EPS),
                "instance_norm_nhwc": lambda t: TF.instance_norm(t, None, None, wt, bt, True,
                                                                 0.1, EPS)}[op]

        def call():
            return norm(leaf.permute(0, 3, 1, 2))

        def backward(y):
            return torch.autograd.grad(y, inputs, dyt, retain_graph=True)
    else:
        rt = _tensor(torch, residual_of(x)).requires_grad_()
        grads = [_tensor(torch, dy), _tensor(torch, residual_of(dy))]
        inputs = [t for t in (leaf, rt, wt, bt) if t is not None]
        if op == "add_layer_norm":
            def norm(h):
                return TF.layer_norm(h, (L,), wt, bt, EPS)
        else:
            def norm(h):
                return TF.rms_norm(h, (L,), wt, EPS)

        def call():
            h = torch.add(leaf, rt)
            return norm(h), h

        def backward(yh):
            return torch.autograd.grad(list(yh), inputs, grads, retain_graph=True)

    def forward():
        with torch.no_grad():
            return call()
    return forward, backward, call


def _torch_reference(op, torch, xt, wt, bt, mean_weight=MEAN_WEIGHT, var_weight=VAR_WEIGHT):
    """The reference module's forward on PyTorch (training mode), as the papers' code runs it:
    switch_norm as switchablenorms/Switchable-Normalization's SwitchNorm2d (x.mean, x.var,
    the temp-based LN and BN statistics), batch_instance_norm as
    hyseob/Batch-Instance-Normalization's (two F.batch_norm calls)."""
    TF = torch.nn.functional
    N, C = xt.shape[:2]
    pshape = (1, C) + (1,) * (xt.dim() - 2)
    if op == "switch_norm":
        mw = torch.softmax(torch.from_numpy(mean_weight).to(xt.device, xt.dtype), 0)
        vw = torch.softmax(torch.from_numpy(var_weight).to(xt.device, xt.dtype), 0)

        def call():
            x3 = xt.view(N, C, -1)
            mean_in = x3.mean(-1, keepdim=True)
            var_in = x3.var(-1, keepdim=True)
            mean_ln = mean_in.mean(1, keepdim=True)
            temp = var_in + mean_in ** 2
            var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2
            mean_bn = mean_in.mean(0, keepdim=True)
            var_bn = temp.mean(0, keepdim=True) - mean_bn ** 2
            mean = mw[0] * mean_in + mw[1] * mean_ln + mw[2] * mean_bn
            var = vw[0] * var_in + vw[1] * var_ln + vw[2] * var_bn
            y = ((x3 - mean) / (var + EPS).sqrt()).view(xt.shape)
            return y if wt is None else y * wt.view(pshape) + bt.view(pshape)
        return call
    gate = torch.from_numpy(_gate(C)).to(xt.device, xt.dtype)

    def call():
        out_bn = TF.batch_norm(xt, None, None, wt * gate, bt, True, 0.1, EPS)
        xi = xt.view(1, N * C, *xt.shape[2:])
        out_in = TF.batch_norm(xi, None, None, None, None, True, 0.1, EPS).view(xt.shape)
        return out_bn + out_in * (wt * (1 - gate)).view(pshape)
    return call


# ---------------------------------------------------------------------------------------------
# timing

def _time_paired(fns, repeats, min_run, sync=None):
    """Time several implementations of one case interleaved: {name: seconds per call of each
    of `repeats` timed runs}. Each run loops enough calls to last at least min_run; repeat r
    times every implementation once, in turn (the order reversed on odd repeats), so a burst
    of load from other processes falls on all of them within a fraction of a second instead of
    on whichever happened to be running. sync (a GPU synchronisation) closes each timed loop."""
    sync = sync or (lambda: None)
    number = {}
    for name, fn in fns.items():
        fn()  # warm-up (and JIT compile or cache load)
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        once = max(time.perf_counter() - t0, 1e-7)
        number[name] = max(1, int(min_run / once))
    samples = {name: [] for name in fns}
    order = list(fns)
    for r in range(repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            fn, n = fns[name], number[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t0) / n)
    return samples


def _summary(samples):
    """(median, min, max) of one implementation's samples."""
    return float(np.median(samples)), float(min(samples)), float(max(samples))


def _p90(samples):
    """The 90th percentile of the timed runs: beside the median, what a busy machine's
    descheduled threads do to a kernel (whole scheduler time slices) shows here first."""
    return float(np.percentile(samples, 90))


class Progress:
    """'[i/n] label' lines on a stream (stderr), each with the time so far and, from the second
    case on, an estimate of the time left: the mean time of the cases done times the cases
    left."""

    def __init__(self, n, stream):
        self.n, self.stream, self.t0 = n, stream, time.perf_counter()

    def step(self, i, label):
        elapsed = time.perf_counter() - self.t0
        left = (f", about {_duration(elapsed / (i - 1) * (self.n - i + 1))} left"
                if i > 1 else "")
        print(f"[{i}/{self.n}] {label} ({_duration(elapsed)} so far{left})", file=self.stream,
              flush=True)


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def column_notes(columns, bytes_counted="each array the pass reads or writes, once"):
    """The output's footer: one line per column shown, saying what it is."""
    notes = {
        "median": "median: the median over the repeats of the time per call (each repeat "
                  "loops the call for at least --min-run seconds)",
        "p90": "p90: the 90th percentile of the same repeats (a busy machine shows here first)",
        "range": "range: the fastest and slowest repeat",
        "GB/s": f"GB/s: the bytes the call must move ({bytes_counted}) over the median time",
        "%bw": "%bw: GB/s as a percentage of the triad bandwidth measured at the start (above "
               "100: the arrays fit in cache)",
        "%floor": "%floor: the same against the triad bandwidth measured at the start",
        "vs": "vs X: X's time / numbanorm's time, medians of ratios paired per repeat (above "
              "1: numbanorm is faster); columns only for the references installed here",
        "max err": "max err: numbanorm's largest absolute error against a float64 NumPy "
                   "computation of the same input, relative to the largest |value| of that "
                   "result",
    }
    return ["columns:"] + [f"  {notes[c]}" for c in columns if c in notes]


def load_warning(threads):
    """A line warning that other processes are using the cores the timed threads want (the
    1-minute load average above the number of cores), or None."""
    import os
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    cores = os.cpu_count() or 1
    if load <= cores:
        return None
    return (f"warning: load average {load:.1f} on {cores} cores: other processes compete for "
            f"the {threads} timed thread(s), and parallel kernels wait for descheduled ones "
            "(the p90 column shows it); ratios are paired per repeat, times are not this "
            "machine's quiet ones")


def load_warnings(at_start, threads, progress):
    """The load warnings of a run, taken at its start (at_start) and now at its end, each
    once, printed to progress."""
    found = list(dict.fromkeys(w for w in (at_start, load_warning(threads)) if w))
    for w in found:
        print(w, file=progress)
    return found


def _paired_ratio(theirs, ours):
    """Median over repeats of their time / our time in the same repeat."""
    return float(np.median(np.asarray(theirs) / np.asarray(ours)))


def _time(fn, repeats, min_run, sync=None):
    """(median, min, max) seconds per call of fn alone (see _time_paired)."""
    return _summary(_time_paired({"fn": fn}, repeats, min_run, sync)["fn"])


@njit(parallel=True, cache=True)
def _triad(a, b, c, s):
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


def measure_cases(cases, threads, progress, describe, run_one, torch_threads=False):
    """The data suites' run (`--suite data`, `--suite sparse`): Numba's threads set (and
    PyTorch's, with torch_threads, where installed), the load at the start, the triad
    bandwidth, run_one(case, bandwidth) per case with describe(case) printed to progress as
    "[i/n] ...", and the load warnings at the end. Returns (threads, bandwidth, rows,
    warnings)."""
    import numba
    progress = progress or sys.stderr
    if threads is not None:
        numba.set_num_threads(threads)
    threads = numba.get_num_threads()
    if torch_threads:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            pass
    start = load_warning(threads)
    bandwidth = triad_bandwidth()
    rows = []
    steps = Progress(len(cases), progress)
    for i, case in enumerate(cases, 1):
        steps.step(i, describe(case))
        rows.append(run_one(case, bandwidth))
    return threads, bandwidth, rows, load_warnings(start, threads, progress)


def triad_bandwidth(n=1 << 25, repeats=7):
    """Memory bandwidth in GB/s from a parallel triad over three 256 MiB float64 arrays
    (two reads and one write counted)."""
    b = np.ones(n)
    c = np.ones(n)
    a = np.empty(n)
    _triad(a, b, c, 3.0)
    best = min(_timed(lambda: _triad(a, b, c, 3.0)) for _ in range(repeats))
    return 3 * a.nbytes / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _max_rel_err(ours, ref):
    ref = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    return float(np.max(np.abs(ours.astype(np.float64) - ref))) / (scale or 1.0)


def run_case(op, shape, dtype, repeats, min_run, with_torch, with_numpy, bandwidth,
             preallocated=False):
    rng = np.random.default_rng(0)
    dt = np_dtype(dtype)
    x = (rng.standard_normal(shape) + 0.5).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    pshape = _param_shape(op, shape)
    w = (1 + 0.1 * rng.standard_normal(pshape)).astype(dt)
    b = None if op in NO_BIAS else (0.1 * rng.standard_normal(pshape)).astype(dt)
    rows = []
    nb_fwd, nb_bwd, nb_plain = numbanorm_impl(op, x, w, b, dy, preallocated)
    y = nb_plain()  # the accuracy column checks the timed forward (out= under --out)
    saved = nb_fwd()[1]
    dx = nb_bwd(saved)[0]
    ref_fwd, ref_bwd = numpy_impl(op, x.astype(np.float64), w.astype(np.float64),
                                  None if b is None else b.astype(np.float64),
                                  dy.astype(np.float64))
    ref_y, ref_state = ref_fwd()
    ref_dx = ref_bwd(ref_state)[0]
    errors = {"forward": _max_rel_err(y, ref_y), "backward": _max_rel_err(dx, ref_dx)}
    impls = {"forward": {"numbanorm": nb_plain}, "backward": {"numbanorm": lambda: nb_bwd(saved)}}
    if dtype in HALF:  # numbanorm's float32 on the same values
        f32 = [None if a is None else a.astype(np.float32) for a in (x, w, b, dy)]
        f_fwd, f_bwd, f_plain = numbanorm_impl(op, *f32, preallocated)
        f_saved = f_fwd()[1]
        impls["forward"]["f32"] = f_plain
        impls["backward"]["f32"] = lambda: f_bwd(f_saved)
    if with_numpy:
        np_fwd, np_bwd = numpy_impl(op, x, w, b, dy)
        state = np_fwd()[1]
        impls["forward"]["numpy"] = np_fwd
        impls["backward"]["numpy"] = lambda: np_bwd(state)
        if dtype in HALF:
            v_fwd, v_bwd = numpy_impl(op, x, w, b, dy, via=np.float32)
            v_state = v_fwd()[1]
            impls["forward"]["np-f32"] = v_fwd
            impls["backward"]["np-f32"] = lambda: v_bwd(v_state)
    if with_torch:
        t_fwd, t_bwd, t_call = torch_impl(op, x, w, b, dy)
        y_graph = t_call()
        impls["forward"]["torch"] = t_fwd
        impls["backward"]["torch"] = lambda: t_bwd(y_graph)
    samples = {d: _time_paired(impls[d], repeats, min_run) for d in impls}
    for direction, streams in zip(("forward", "backward"), STREAMS.get(op, (2, 3))):
        ours = samples[direction]["numbanorm"]
        med, lo, hi = _summary(ours)
        gbs = streams * x.nbytes / med / 1e9
        row = {"op": op, "shape": list(shape), "dtype": dtype, "pass": direction,
               "median_s": med, "min_s": lo, "max_s": hi, "p90_s": _p90(ours),
               "gb_per_s": gbs,
               "pct_bandwidth": 100 * gbs / bandwidth if bandwidth else None,
               "max_rel_err": errors[direction]}
        for name, theirs in samples[direction].items():
            if name != "numbanorm":
                row[f"vs_{name}"] = _paired_ratio(theirs, ours)
                row[f"{name}_s"] = float(np.median(theirs))
        rows.append(row)
    return rows


def _fmt_table(rows, bandwidth, threads):
    versus = [v for v in ("numpy", "np-f32", "torch", "f32") if any(f"vs_{v}" in r for r in rows)]
    head = (f"{'op':<21}{'shape':<20}{'dtype':<9}{'pass':<9}{'median':>11}{'p90':>11}"
            f"{'range':>21}"
            f"{'GB/s':>8}{'%bw':>6}" + "".join(f"{'vs ' + v:>11}" for v in versus)
            + f"{'max err':>10}")
    lines = [f"numbanorm bench: {threads} thread(s), triad bandwidth {bandwidth:.1f} GB/s; "
             "'vs X' = X's time / numbanorm's time (higher is better)", head, "-" * len(head)]
    for r in rows:
        rng_ = f"{r['min_s'] * 1e3:.3g}-{r['max_s'] * 1e3:.3g} ms"
        vs = "".join(f"{(format(r['vs_' + v], '.2f') + 'x') if 'vs_' + v in r else '-':>11}"
                     for v in versus)
        pct = f"{r['pct_bandwidth']:.0f}" if r["pct_bandwidth"] is not None else "-"
        lines.append(
            f"{r['op']:<21}{'x'.join(map(str, r['shape'])):<20}{r['dtype']:<9}{r['pass']:<9}"
            f"{r['median_s'] * 1e3:>9.4g}ms{r['p90_s'] * 1e3:>9.4g}ms{rng_:>21}"
            f"{r['gb_per_s']:>8.1f}{pct:>6}"
            f"{vs}{r['max_rel_err']:>10.1e}")
    ratios = [r["vs_torch"] for r in rows if "vs_torch" in r]
    if ratios:
        geo = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
        lines.append(f"geometric mean vs torch: {geo:.2f}x over {len(ratios)} cases; "
                     f"slowest {min(ratios):.2f}x")
    lines += column_notes(["median", "p90", "range", "GB/s", "%bw"]
                          + (["vs"] if versus else []) + ["max err"])
    if "f32" in versus or "np-f32" in versus:
        lines.append("  vs f32: numbanorm on the same values in float32; vs np-f32: NumPy "
                     "computing 16-bit input in float32")
    return "\n".join(lines)


def run(cases, repeats=5, min_run=0.05, threads=None, with_torch=True, with_numpy=True,
        as_json=False, progress=None, measure_bandwidth=True, preallocated=False):
    progress = progress or sys.stderr  # looked up per call: the stream may be replaced
    import numba
    if threads is not None:
        numba.set_num_threads(threads)
    threads = numba.get_num_threads()
    torch_ok = False
    if with_torch:
        try:
            import torch
            torch.set_num_threads(threads)
            torch_ok = True
        except ImportError:
            print("PyTorch is not installed: the 'vs torch' column is left out", file=progress)
    start = load_warning(threads)
    bandwidth = triad_bandwidth() if measure_bandwidth else None
    rows = []
    steps = Progress(len(cases), progress)
    for i, (op, shape, dtype) in enumerate(cases, 1):
        steps.step(i, f"{op} {'x'.join(map(str, shape))} {dtype}")
        rows += run_case(op, shape, dtype, repeats, min_run, torch_ok, with_numpy, bandwidth,
                         preallocated)
    warnings = load_warnings(start, threads, progress)
    if as_json:
        return json.dumps({"threads": threads, "triad_gb_per_s": bandwidth,
                           "outputs_preallocated": preallocated, "load_warnings": warnings,
                           "rows": rows}, indent=1)
    table = "\n".join(warnings + [_fmt_table(rows, bandwidth or float("nan"), threads)])
    if preallocated:
        table += ("\nnumbanorm wrote into preallocated arrays (forward out=, backward dx_out=); "
                  "NumPy and PyTorch allocated theirs")
    return table
