"""numbanorm against PyTorch (CPU) on adversarial inputs, each measured against a float64
reference computed from the same (already rounded) input. Prints the Markdown table that the
README's "Numerical guarantees" section shows.

    python scripts/robustness_table.py            # PyTorch column when torch is installed

Errors: "y err" is max |y - y_ref| (outputs are O(1), so this is also the relative error);
"var err" is the relative error of the variance (batch_norm: the unbiased batch variance
written to running_var with momentum 1; layer/group norm: 1/rstd^2 - eps from the returned
statistics); "n/a" where the variance exceeds the range of the dtype holding it. "dx err" is max |dx - dx_ref| / max |dx_ref|. A cell reads
"nan" or "inf" when the library returned non-finite values where the reference is finite.
"""
import math
import sys

import numpy as np

import numbanorm as nbn

try:
    import torch
except ImportError:  # the table then has no PyTorch column
    torch = None

EPS = 1e-5


def _reference(x64, axes, dy64=None, eps=EPS):
    """Two-pass float64 statistics over `axes`, on data scaled by a power of two so that the
    squares of |x| ~ 1e300 stay finite (the variance itself is then beyond float64: inf)."""
    scale = 2.0 ** np.frexp(np.max(np.abs(x64)))[1]
    mean = x64.mean(axis=axes, keepdims=True)
    var_scaled = (((x64 - mean) / scale) ** 2).mean(axis=axes, keepdims=True)
    with np.errstate(over="ignore"):
        var = var_scaled * scale * scale
    rstd = 1.0 / scale / np.sqrt(var_scaled + eps / scale / scale)
    xhat = (x64 - mean) * rstd
    dx = None
    if dy64 is not None:
        dx = rstd * (dy64 - dy64.mean(axis=axes, keepdims=True)
                     - xhat * (dy64 * xhat).mean(axis=axes, keepdims=True))
    return xhat, var, dx


def _err(a, ref):
    a = np.asarray(a, np.float64)
    if not np.all(np.isfinite(a)):
        return math.nan if np.isnan(a).any() else math.inf
    return float(np.max(np.abs(a - ref), initial=0.0))


def _rel(a, ref, a_dtype):
    a = np.asarray(a, np.float64).ravel()
    ref = np.asarray(ref, np.float64).ravel()
    if not np.all(np.abs(ref) <= np.finfo(a_dtype).max):
        return None  # the variance itself is beyond the dtype's range
    if not np.all(np.isfinite(a)):
        return math.nan if np.isnan(a).any() else math.inf
    return float(np.max(np.abs(a - ref) / np.abs(ref)))


def _data(shape, mean, std, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * std + mean).astype(dtype)


# --- one function per library and op: (y, var, dx) for x, dy --------------------------------

def nb_batch_norm(x, dy):
    C = x.shape[1]
    rm, rv = np.zeros(C, x.dtype), np.ones(C, x.dtype)
    y, saved = nbn.batch_norm_forward(x, rm, rv, training=True, momentum=1.0, eps=EPS)
    return y, rv, nbn.batch_norm_backward(dy, saved)[0]


def torch_batch_norm(x, dy):
    C = x.shape[1]
    t = torch.tensor(x, requires_grad=True)
    rm, rv = torch.zeros(C, dtype=t.dtype), torch.ones(C, dtype=t.dtype)
    y = torch.nn.functional.batch_norm(t, rm, rv, training=True, momentum=1.0, eps=EPS)
    (dx,) = torch.autograd.grad(y, t, torch.tensor(dy))
    return y.detach().numpy(), rv.numpy(), dx.numpy()


def nb_layer_norm(x, dy):
    y, saved = nbn.layer_norm_forward(x, x.shape[-1], eps=EPS)
    return y, 1.0 / saved._rstd64 ** 2 - EPS, nbn.layer_norm_backward(dy, saved)[0]


def torch_layer_norm(x, dy):
    t = torch.tensor(x, requires_grad=True)
    y, _, rstd = torch.ops.aten.native_layer_norm(t, [x.shape[-1]], None, None, EPS)
    (dx,) = torch.autograd.grad(y, t, torch.tensor(dy))
    return y.detach().numpy(), 1.0 / rstd.detach().double().numpy() ** 2 - EPS, dx.numpy()


def nb_group_norm(x, dy):
    y, saved = nbn.group_norm_forward(x, 4, eps=EPS)
    return y, 1.0 / saved._rstd64 ** 2 - EPS, nbn.group_norm_backward(dy, saved)[0]


def torch_group_norm(x, dy):
    t = torch.tensor(x, requires_grad=True)
    N, C = x.shape[:2]
    S = x.size // (N * C)
    y, _, rstd = torch.ops.aten.native_group_norm(t, None, None, N, C, S, 4, EPS)
    (dx,) = torch.autograd.grad(y, t, torch.tensor(dy))
    return y.detach().numpy(), 1.0 / rstd.detach().double().numpy() ** 2 - EPS, dx.numpy()


def _channels_last(x):
    """x's values in channels-last memory, shown as (N, C, H, W) (the transpose of an
    (N, H, W, C) array; a PyTorch channels_last tensor's layout)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def nb_group_norm_cl(x, dy):
    y, saved = nbn.group_norm_forward(_channels_last(x), 4, eps=EPS)
    return y, 1.0 / saved._rstd64 ** 2 - EPS, nbn.group_norm_backward(_channels_last(dy), saved)[0]


def torch_group_norm_cl(x, dy):
    t = torch.from_numpy(_channels_last(x)).requires_grad_()
    assert t.is_contiguous(memory_format=torch.channels_last)
    N, C = x.shape[:2]
    S = x.size // (N * C)
    y, _, rstd = torch.ops.aten.native_group_norm(t, None, None, N, C, S, 4, EPS)
    (dx,) = torch.autograd.grad(y, t, torch.from_numpy(_channels_last(dy)))
    return y.detach().numpy(), 1.0 / rstd.detach().double().numpy() ** 2 - EPS, dx.numpy()


OPS = {
    "batch_norm": (nb_batch_norm, torch_batch_norm, lambda x: (0,) + tuple(range(2, x.ndim))),
    "layer_norm": (nb_layer_norm, torch_layer_norm, lambda x: (x.ndim - 1,)),
    "group_norm": (nb_group_norm, torch_group_norm, lambda g: (2, 3)),
    "group_norm channels_last": (nb_group_norm_cl, torch_group_norm_cl, lambda g: (2, 3)),
}


def _group_view(op, x):
    """x reshaped so that the reference's axes are the normalised ones."""
    if op.startswith("group_norm"):
        return x.reshape(x.shape[0], 4, -1)[..., None]
    return x


def cases():
    """(label, op, x) with float32 unless the label says otherwise."""
    yield "(N, C) mean 1e4, std 1", "batch_norm", _data((4096, 64), 1e4, 1.0)
    yield "(N, C) mean 1e6, std 1", "batch_norm", _data((4096, 64), 1e6, 1.0)
    yield "NCHW mean 1e6, std 1", "batch_norm", _data((16, 8, 16, 16), 1e6, 1.0)
    yield "rows mean 1e4, std 1", "layer_norm", _data((64, 1024), 1e4, 1.0)
    yield "rows mean 1e6, std 1", "layer_norm", _data((64, 1024), 1e6, 1.0)
    yield "groups mean 1e6, std 1", "group_norm", _data((4, 16, 32, 32), 1e6, 1.0)
    yield "NHWC groups mean 1e4, std 1", "group_norm channels_last", _data((4, 16, 32, 32), 1e4,
                                                                           1.0)
    yield "|x| ~ 1e30 (std 1e30)", "layer_norm", _data((8, 4096), 0.0, 1e30)
    yield "|x| ~ 1e30 (std 1e30)", "batch_norm", _data((512, 16), 0.0, 1e30)
    yield "|x| ~ 1e30 (std 1e30)", "group_norm", _data((2, 8, 32, 32), 0.0, 1e30)
    yield "float64 |x| ~ 1e300", "layer_norm", _data((8, 4096), 0.0, 1e300, np.float64)
    yield "float64 |x| ~ 1e300", "batch_norm", _data((512, 16), 0.0, 1e300, np.float64)
    yield "std 1e-4 (var << eps)", "layer_norm", _data((64, 1024), 1.0, 1e-4)


def run(print_fn=print):
    """Measure every case; print and return the rows as dicts."""
    head = "| case | op | numbanorm y err | var err | dx err |"
    sep = "|---|---|---|---|---|"
    if torch is not None:
        head += f" PyTorch {torch.__version__.split('+')[0]} y err | var err | dx err |"
        sep += "---|---|---|"
    print_fn(head)
    print_fn(sep)
    rows = []
    for label, op, x in cases():
        nb_fn, torch_fn, axes_of = OPS[op]
        dy = _data(x.shape, 0.0, 1.0, x.dtype, seed=1)
        g = _group_view(op, x.astype(np.float64))
        xhat, var, dx = _reference(g, axes_of(g), _group_view(op, dy.astype(np.float64)))
        xhat, var, dx = xhat.reshape(x.shape), var.ravel(), dx.reshape(x.shape)
        if op == "batch_norm":  # compared with running_var: the unbiased variance
            n = x.size // x.shape[1]
            var = var * (n / (n - 1))
        dx_scale = np.max(np.abs(dx))
        row = dict(case=label, op=op)
        libs = [("numbanorm", nb_fn)] + ([("torch", torch_fn)] if torch is not None else [])
        cells = []
        for name, fn in libs:
            with np.errstate(all="ignore"):
                y, v, d = fn(x, dy)
                row[name] = dict(y=_err(y, xhat), var=_rel(v, var, v.dtype),
                                 dx=_err(d, dx) / dx_scale)
            cells += ["n/a" if row[name][k] is None else f"{row[name][k]:.1e}"
                      for k in ("y", "var", "dx")]
        rows.append(row)
        print_fn(f"| {label} | {op} | " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    run()
    sys.exit(0)
