"""Float64 NumPy reference for every op, forward and backward, written from the definitions
(two-pass mean and variance, NumPy reductions) and independent of numbanorm's kernels.

Each function returns a dict with y, mean, rstd (shaped like numbanorm's saved statistics) and,
when dy is given, dx, dweight, dbias. Gradients use the textbook formulas with
xhat = (x - mean)*rstd and g = dy*w:  dx = rstd*(g - mean(g) - xhat*mean(g*xhat)); the finite-
difference tests check those formulas independently.
"""
import numpy as np


def _normalize(xg, dyg, wg, bg, axes, centered, eps, param_axes, stat_shape, C):
    """xg: x reshaped so that `axes` are the normalised ones; wg/bg broadcast to xg."""
    mean = xg.mean(axis=axes, keepdims=True) if centered else np.zeros_like(
        xg.sum(axis=axes, keepdims=True))
    var = ((xg - mean) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (xg - mean) * rstd
    y = xhat * wg + bg
    res = dict(y=y, mean=mean.reshape(stat_shape) if centered else None,
               rstd=rstd.reshape(stat_shape), var=var.reshape(stat_shape))
    if dyg is not None:
        g = dyg * wg
        mg = g.mean(axis=axes, keepdims=True) if centered else 0.0
        res["dx"] = rstd * (g - mg - xhat * (g * xhat).mean(axis=axes, keepdims=True))
        res["dweight"] = (dyg * xhat).sum(axis=param_axes).reshape(C)
        res["dbias"] = dyg.sum(axis=param_axes).reshape(C)
    return res


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _finish(res, shape, wshape):
    res["y"] = res["y"].reshape(shape)
    if "dx" in res:
        res["dx"] = res["dx"].reshape(shape)
        res["dweight"] = res["dweight"].reshape(wshape)
        res["dbias"] = res["dbias"].reshape(wshape)
    return res


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, dy=None, centered=True):
    x, dy, w, b = _f64(x), _f64(dy), _f64(weight), _f64(bias)
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    L = int(np.prod(shape))
    lead = x.shape[:x.ndim - len(shape)]
    xg = x.reshape(-1, L)
    wg = np.ones(L) if w is None else w.reshape(L)
    bg = np.zeros(L) if b is None else b.reshape(L)
    res = _normalize(xg, None if dy is None else dy.reshape(-1, L), wg[None], bg[None], (1,),
                     centered, eps, (0,), lead, L)
    return _finish(res, x.shape, shape)


def rms_norm(x, normalized_shape, weight=None, eps=None, dy=None):
    if eps is None:
        eps = float(np.finfo(np.asarray(x).dtype).eps)
    return layer_norm(x, normalized_shape, weight, None, eps, dy, centered=False)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, dy=None):
    x, dy, w, b = _f64(x), _f64(dy), _f64(weight), _f64(bias)
    N, C = x.shape[:2]
    G = num_groups
    xg = x.reshape(N, G, C // G, -1)
    wg = (np.ones(C) if w is None else w).reshape(1, G, C // G, 1)
    bg = (np.zeros(C) if b is None else b).reshape(1, G, C // G, 1)
    res = _normalize(xg, None if dy is None else dy.reshape(xg.shape), wg, bg, (2, 3), True,
                     eps, (0, 3), (N, G), C)
    return _finish(res, x.shape, (C,))


def instance_norm(x, weight=None, bias=None, eps=1e-5, dy=None):
    return group_norm(x, np.asarray(x).shape[1], weight, bias, eps, dy)


def batch_norm_train(x, weight=None, bias=None, eps=1e-5, dy=None):
    x, dy, w, b = _f64(x), _f64(dy), _f64(weight), _f64(bias)
    N, C = x.shape[:2]
    xg = x.reshape(N, C, -1)
    wg = (np.ones(C) if w is None else w).reshape(1, C, 1)
    bg = (np.zeros(C) if b is None else b).reshape(1, C, 1)
    res = _normalize(xg, None if dy is None else dy.reshape(xg.shape), wg, bg, (0, 2), True,
                     eps, (0, 2), (C,), C)
    n = xg.shape[0] * xg.shape[2]
    res["var_unbiased"] = res["var"] * n / (n - 1)
    return _finish(res, x.shape, (C,))


def batch_norm_eval(x, running_mean, running_var, weight=None, bias=None, eps=1e-5, dy=None):
    """Normalisation by fixed statistics: no reduction in the forward, and dx = dy*w*rstd."""
    x, dy, w, b = _f64(x), _f64(dy), _f64(weight), _f64(bias)
    N, C = x.shape[:2]
    xg = x.reshape(N, C, -1)
    wg = (np.ones(C) if w is None else w).reshape(1, C, 1)
    bg = (np.zeros(C) if b is None else b).reshape(1, C, 1)
    mean = _f64(running_mean).reshape(1, C, 1)
    rstd = 1.0 / np.sqrt(_f64(running_var).reshape(1, C, 1) + eps)
    xhat = (xg - mean) * rstd
    res = dict(y=(xhat * wg + bg).reshape(x.shape), mean=mean.reshape(C), rstd=rstd.reshape(C))
    if dy is not None:
        dyg = dy.reshape(xg.shape)
        res["dx"] = (dyg * wg * rstd).reshape(x.shape)
        res["dweight"] = (dyg * xhat).sum(axis=(0, 2))
        res["dbias"] = dyg.sum(axis=(0, 2))
    return res


# ---------------------------------------------------------------------------------------------
# data normalization, from the definitions (float64, NumPy reductions)

def _resolution(x):
    """The eps of the constant-slice rules: the dtype's, float32's for 16-bit data (which
    numbanorm computes in float32, as documented)."""
    dt = np.asarray(x).dtype
    return float(np.finfo(np.float32 if dt.itemsize == 2 else dt).eps)


def _axes(x, axis):
    return tuple(range(x.ndim)) if axis is None else (
        (axis,) if np.isscalar(axis) else tuple(axis))


def zscore(x, axis=0, ddof=0, omit=False):
    """(x - mean)/std_ddof over the axes; NaN left out when omit; slices whose std is within
    eps(x.dtype)*|mean| (scipy's constant rule) are NaN."""
    eps = _resolution(x)
    x = _f64(x)
    ax = _axes(x, axis)
    ok = ~np.isnan(x) if omit else np.ones(x.shape, bool)
    n = ok.sum(axis=ax, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, x, 0).sum(axis=ax, keepdims=True) / n
        if not omit:
            mean = x.sum(axis=ax, keepdims=True) / n
        dev = np.where(ok, x - mean, 0.0) if omit else x - mean
        var = (dev ** 2).sum(axis=ax, keepdims=True) / (n - ddof)
        var = np.where(n - ddof > 0, var, np.nan)
        std = np.sqrt(var)
        z = (x - mean) / std
    return np.where(std <= np.abs(eps * mean), np.nan, z)


def minmax_scale(x, feature_range=(0, 1), axis=0):
    """(x - min)/(max - min)*(hi - lo) + lo over the axes, NaN ignored; a range below 10 eps of
    x's dtype counts as 1 (scikit-learn)."""
    eps = _resolution(x)
    x = _f64(x)
    ax = _axes(x, axis)
    lo, hi = feature_range
    with np.errstate(invalid="ignore"):
        mn = np.nanmin(x, axis=ax, keepdims=True) if x.size else x
        mx = np.nanmax(x, axis=ax, keepdims=True) if x.size else x
        rng = mx - mn
        rng = np.where(rng < 10 * eps, 1.0, rng)
        return (x - mn) / rng * (hi - lo) + lo


def normalize(x, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p, eps) over the dims."""
    x = _f64(x)
    ax = _axes(x, dim)
    a = np.abs(x)
    if p == np.inf:
        norm = a.max(axis=ax, keepdims=True)
    else:
        norm = (a ** p).sum(axis=ax, keepdims=True) ** (1.0 / p)
    return x / np.maximum(norm, eps)


# ---------------------------------------------------------------------------------------------
# adaptive normalization and local response normalization (forward; the backward tests take
# PyTorch's autograd on these same transcriptions, and finite differences)

def _softmax(v):
    e = np.exp(np.asarray(v, np.float64) - np.max(v))
    return e / e.sum()


def switch_norm(x, mean_weight, var_weight, running_mean=None, running_var=None, weight=None,
                bias=None, training=False, eps=1e-5, using_bn=True, reference=False):
    """Switchable Normalization in float64 NumPy: the reference code's forward
    (switchablenorms/Switchable-Normalization, devkit/ops/switchable_norm.py) transcribed when
    reference=True, else the same mix with exact biased variances, two-pass over each group.
    Returns dict(y, batch_mean, batch_var): the BN statistics a training step puts into the
    running buffers (unbiased variance; reference: the reference's var_bn)."""
    x = _f64(x)
    N, C = x.shape[:2]
    mw, vw = _softmax(mean_weight), _softmax(var_weight)
    out = dict(batch_mean=None, batch_var=None)
    if x.ndim == 2:
        ddof = 1 if reference else 0
        means = [x.mean(1, keepdims=True)]
        vars_ = [x.var(1, ddof=ddof, keepdims=True)]
        if using_bn:
            if training:
                means.append(x.mean(0, keepdims=True))
                vars_.append(x.var(0, ddof=ddof, keepdims=True))
                out["batch_mean"] = means[-1].ravel()
                out["batch_var"] = x.var(0, ddof=1)
            else:
                means.append(_f64(running_mean).reshape(1, C))
                vars_.append(_f64(running_var).reshape(1, C))
        xs = x
    else:
        xs = x.reshape(N, C, -1)
        mean_in = xs.mean(-1, keepdims=True)
        var_in = xs.var(-1, ddof=1 if reference else 0, keepdims=True)
        mean_ln = mean_in.mean(1, keepdims=True)
        if reference:
            temp = var_in + mean_in ** 2
            var_ln = temp.mean(1, keepdims=True) - mean_ln ** 2
        else:
            var_ln = xs.reshape(N, -1).var(1).reshape(N, 1, 1)
        means, vars_ = [mean_in, mean_ln], [var_in, var_ln]
        if using_bn:
            if training:
                mean_bn = mean_in.mean(0, keepdims=True)
                flat = xs.transpose(1, 0, 2).reshape(C, -1)
                if reference:
                    var_bn = temp.mean(0, keepdims=True) - mean_bn ** 2
                    out["batch_var"] = var_bn.ravel()
                else:
                    var_bn = flat.var(1).reshape(1, C, 1)
                    out["batch_var"] = flat.var(1, ddof=1)
                out["batch_mean"] = mean_bn.ravel()
            else:
                mean_bn = _f64(running_mean).reshape(1, C, 1)
                var_bn = _f64(running_var).reshape(1, C, 1)
            means.append(mean_bn)
            vars_.append(var_bn)
    mean = sum(w * m for w, m in zip(mw, means))
    var = sum(w * v for w, v in zip(vw, vars_))
    y = (xs - mean) / np.sqrt(var + eps)
    pshape = (1, C) + (1,) * (y.ndim - 2)
    if weight is not None:
        y = y * _f64(weight).reshape(pshape)
    if bias is not None:
        y = y + _f64(bias).reshape(pshape)
    out["y"] = y.reshape(x.shape)
    return out


def batch_instance_norm(x, gate, running_mean=None, running_var=None, weight=None, bias=None,
                        training=False, eps=1e-5):
    """Batch-Instance Normalization in float64 NumPy: (rho*BN(x) + (1 - rho)*IN(x))*w + b."""
    x = _f64(x)
    N, C = x.shape[:2]
    xs = x.reshape(N, C, -1)
    pshape = (1, C, 1)
    rho = _f64(gate).reshape(pshape)
    if training:
        mean_bn = xs.mean((0, 2), keepdims=True)
        var_bn = xs.var((0, 2), keepdims=True)
    else:
        mean_bn = _f64(running_mean).reshape(pshape)
        var_bn = _f64(running_var).reshape(pshape)
    bn = (xs - mean_bn) / np.sqrt(var_bn + eps)
    inst = (xs - xs.mean(2, keepdims=True)) / np.sqrt(xs.var(2, keepdims=True) + eps)
    y = rho * bn + (1.0 - rho) * inst
    if weight is not None:
        y = y * _f64(weight).reshape(pshape)
    if bias is not None:
        y = y + _f64(bias).reshape(pshape)
    return dict(y=y.reshape(x.shape), batch_mean=mean_bn.ravel(),
                batch_var=xs.transpose(1, 0, 2).reshape(C, -1).var(1, ddof=1))


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0, dy=None):
    """PyTorch's local_response_norm in float64 NumPy, each window summed directly (math.fsum:
    exact sums), and its gradient from the formula of numbanorm.cpu.window's docstring."""
    import math
    x = _f64(x)
    N, C = x.shape[:2]
    xs = x.reshape(N, C, -1)
    sq = xs * xs
    d = np.empty_like(xs)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)
        for n in range(N):
            for s in range(xs.shape[2]):
                d[n, c, s] = math.fsum(sq[n, lo:hi, s])
    d = d / size * alpha + k
    res = dict(y=(xs / d ** beta).reshape(x.shape))
    if dy is not None:
        g = _f64(dy).reshape(xs.shape)
        t = g * xs * d ** (-beta - 1.0)
        acc = np.zeros_like(xs)
        for c in range(C):
            acc[:, c] = t[:, max(0, c - (size - 1) // 2):min(C, c + size // 2 + 1)].sum(1)
        res["dx"] = (g * d ** (-beta) - 2.0 * alpha * beta / size * xs * acc).reshape(x.shape)
    return res
