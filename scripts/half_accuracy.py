"""numbanorm against PyTorch's 16-bit CPU ops (float16, bfloat16), each against a float64
reference computed from the same 16-bit input. Prints the Markdown table of the README's
16-bit section.

    python scripts/half_accuracy.py            # needs ml_dtypes; PyTorch columns when installed

"y ulps" is the largest error of y against the reference rounded to the 16-bit dtype, in units
in the last place of the 16-bit dtype at the reference's value (0: the correctly rounded
result; 1: one step off; near 0, where the spacing is small, an absolute error of 1e-4 is
thousands of ulps); "y err" is max |y - y_ref| (y is O(1)); "dx err" is
max |dx - dx_ref| / max |dx_ref|. Weight and bias are
in the input's dtype (weight near 1, bias near 0), dy is N(0, 1) in the input's dtype.
"""
import math
import sys

import numpy as np

import numbanorm as nbn

try:
    import ml_dtypes
except ImportError:
    sys.exit("needs ml_dtypes: pip install ml_dtypes")
try:
    import torch
except ImportError:  # the table then has no PyTorch columns
    torch = None

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
EPS = 1e-5
RMS_EPS = float(np.finfo(np.float32).eps)


def ulp(v, dtype):
    mant, emin = (10, -14) if dtype == F16 else (7, -126)
    a = np.abs(np.asarray(v, np.float64))
    return np.exp2(np.maximum(np.floor(np.log2(np.where(a > 0, a, 1.0))), emin) - mant)


def y_ulps(y, ref, dtype):
    y = np.asarray(y, np.float64)
    if not np.all(np.isfinite(y)):
        return math.nan if np.isnan(y).any() else math.inf
    r16 = ref.astype(dtype).astype(np.float64)
    return float(np.max(np.abs(y - r16) / ulp(r16, dtype)))


def rel(d, ref):
    d = np.asarray(d, np.float64)
    if not np.all(np.isfinite(d)):
        return math.nan if np.isnan(d).any() else math.inf
    return float(np.max(np.abs(d - ref)) / np.max(np.abs(ref)))


def reference(op, x, w, b, dy):
    """float64 (y, dx) from the definitions: two-pass statistics over the normalised axes."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    N, C = x.shape[:2]
    if op in ("layer_norm", "rms_norm"):
        axes, wg, bg, xg, dg = (1,), w[None], b[None], x.reshape(-1, x.shape[-1]), dy.reshape(
            -1, x.shape[-1])
    else:
        G = {"batch_norm": None, "group_norm": 4, "instance_norm": C}[op]
        if G is None:
            xg, dg, axes = x.reshape(N, C, -1), dy.reshape(N, C, -1), (0, 2)
            wg, bg = w.reshape(1, C, 1), b.reshape(1, C, 1)
        else:
            xg, dg, axes = x.reshape(N, G, C // G, -1), dy.reshape(N, G, C // G, -1), (2, 3)
            wg, bg = w.reshape(1, G, C // G, 1), b.reshape(1, G, C // G, 1)
    centered = op != "rms_norm"
    mean = xg.mean(axis=axes, keepdims=True) if centered else 0.0
    eps = EPS if centered else RMS_EPS
    rstd = 1.0 / np.sqrt(((xg - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (xg - mean) * rstd
    y = xhat * wg + (bg if centered else 0.0)
    g = dg * wg
    mg = g.mean(axis=axes, keepdims=True) if centered else 0.0
    dx = rstd * (g - mg - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    return y.reshape(x.shape), dx.reshape(x.shape)


def ours(op, x, w, b, dy):
    fwd = {"layer_norm": lambda: nbn.layer_norm_forward(x, x.shape[-1], w, b, EPS),
           "rms_norm": lambda: nbn.rms_norm_forward(x, x.shape[-1], w),
           "group_norm": lambda: nbn.group_norm_forward(x, 4, w, b, EPS),
           "instance_norm": lambda: nbn.instance_norm_forward(x, weight=w, bias=b, eps=EPS),
           "batch_norm": lambda: nbn.batch_norm_forward(x, None, None, w, b, True, eps=EPS)}[op]
    y, saved = fwd()
    return y, getattr(nbn, op + "_backward")(dy, saved)[0]


def theirs(op, x, w, b, dy):
    tdt = torch.float16 if x.dtype == F16 else torch.bfloat16

    def t(a, grad=False):
        return torch.from_numpy(a.astype(np.float32)).to(tdt).requires_grad_(grad)
    xt, wt, bt = t(x, True), t(w), t(b)
    F = torch.nn.functional
    y = {"layer_norm": lambda: F.layer_norm(xt, (x.shape[-1],), wt, bt, EPS),
         "rms_norm": lambda: F.rms_norm(xt, (x.shape[-1],), wt),
         "group_norm": lambda: F.group_norm(xt, 4, wt, bt, EPS),
         "instance_norm": lambda: F.instance_norm(xt, weight=wt, bias=bt, eps=EPS),
         "batch_norm": lambda: F.batch_norm(xt, None, None, wt, bt, True, eps=EPS)}[op]()
    (dx,) = torch.autograd.grad(y, xt, t(dy))
    return y.detach().float().numpy(), dx.float().numpy()


def cases():
    """(label, op, dtype, shape, mean, std)"""
    for dtype, name in ((F16, "float16"), (BF16, "bfloat16")):
        yield f"{name} N(0, 1)", "layer_norm", dtype, (64, 1024), 0.0, 1.0
        yield f"{name} N(0, 1)", "rms_norm", dtype, (64, 1024), 0.0, 1.0
        yield f"{name} N(0, 1)", "group_norm", dtype, (8, 32, 16, 16), 0.0, 1.0
        yield f"{name} N(0, 1)", "instance_norm", dtype, (8, 32, 16, 16), 0.0, 1.0
        yield f"{name} N(0, 1)", "batch_norm", dtype, (64, 32, 8, 8), 0.0, 1.0
    yield "float16 mean 100, std 1", "layer_norm", F16, (64, 1024), 100.0, 1.0
    yield "float16 mean 100, std 1", "batch_norm", F16, (64, 32, 8, 8), 100.0, 1.0
    yield "float16 |x| ~ 6e4", "layer_norm", F16, (64, 1024), 0.0, 2e4
    yield "float16 |x| ~ 6e4", "rms_norm", F16, (64, 1024), 0.0, 2e4
    yield "bfloat16 mean 1e4, std 100", "layer_norm", BF16, (64, 1024), 1e4, 100.0
    yield "bfloat16 mean 1e4, std 100", "group_norm", BF16, (8, 32, 16, 16), 1e4, 100.0
    yield "bfloat16 mean 1e4, std 100", "batch_norm", BF16, (64, 32, 8, 8), 1e4, 100.0


def run(print_fn=print):
    head = "| data | op | numbanorm y ulps | y err | dx err |"
    sep = "|---|---|---|---|---|"
    if torch is not None:
        head += f" PyTorch {torch.__version__.split('+')[0]} y ulps | y err | dx err |"
        sep += "---|---|---|"
    print_fn(head)
    print_fn(sep)
    rows = []
    for label, op, dtype, shape, mean, std in cases():
        rng = np.random.default_rng(0)
        with np.errstate(over="ignore"):
            x = np.clip(rng.standard_normal(shape) * std + mean, -65000, 65000).astype(dtype)
        L = shape[-1] if op in ("layer_norm", "rms_norm") else shape[1]
        w = (1 + 0.1 * rng.standard_normal(L)).astype(dtype)
        b = (0.1 * rng.standard_normal(L)).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        ref_y, ref_dx = reference(op, x, w, b, dy)
        row = dict(case=label, op=op)
        cells = []
        libs = [("numbanorm", ours)] + ([("torch", theirs)] if torch is not None else [])
        for name, fn in libs:
            with np.errstate(all="ignore"):
                y, dx = fn(op, x, w, b, dy)
            row[name] = dict(y_ulps=y_ulps(y, ref_y, dtype), y=rel(y, ref_y) * np.max(
                np.abs(ref_y)), dx=rel(dx, ref_dx))
            cells += [f"{row[name]['y_ulps']:.3g}", f"{row[name]['y']:.1e}",
                      f"{row[name]['dx']:.1e}"]
        rows.append(row)
        print_fn(f"| {label} | {op} | " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    run()
