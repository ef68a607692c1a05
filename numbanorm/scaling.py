"""Data normalization for scientific code: z-score, min-max and Lp scaling along any axes, with
the names, arguments and numbers users know (scipy.stats.zscore,
sklearn.preprocessing.minmax_scale, torch.nn.functional.normalize).

    zscore(a, axis=0, ddof=0, nan_policy='propagate', *, out=None)
    minmax_scale(X, feature_range=(0, 1), *, axis=0, copy=True, out=None)
    normalize(x, p=2.0, dim=1, eps=1e-12, *, out=None)

Each also as NAME_forward(...) -> (y, saved) and NAME_backward(dy, saved) -> dx: the gradient
PyTorch's autograd gives for the same expression, so NumPy training code can put input
standardisation inside its graph.

axis / dim: an int, a tuple of ints (any, not necessarily adjacent), negative values, or None
(all axes). The statistics come from one read of x by the blocked Welford/Chan kernels of the
rows or column geometry (numbanorm._layout maps any axes onto them), merged in float64; the
transform is one elementwise pass in x's dtype, the mean split as in batch_norm so that float32
data far from 0 keeps its precision. No copy of x for the common layouts: reducing the leading
or the trailing axes of a C-contiguous array (or both ends of it: (N, C, H, W) over (0, 2, 3)),
or any axes of a Fortran-ordered one; axes interleaved with kept ones in memory (reduced, kept,
reduced, kept) and strided views are copied once, with the reduced axes last. out= (x's shape
and dtype, may be x itself) is written by the kernel when its memory is laid out like x's,
else filled by one copy.

Integer and boolean input is converted to float64, as scipy and scikit-learn do; complex is
refused; float32 stays float32, and float16 and bfloat16 (ml_dtypes) stay 16-bit: statistics
in float64, the transform computed in float32 and rounded once to 16 bits. Where scipy's and
scikit-learn's rules take the dtype's resolution (constant slices), 16-bit data takes
float32's, the precision it is computed in. The backward passes are NumPy
expressions in float64 over the saved input (not kernels).

On a GPU array, zscore with nan_policy='propagate' runs on the CUDA kernels when the reduced
axes are the trailing ones (the rows kernels) or the leading ones (the column kernels); every
other case on device is a ValueError saying what runs there.
"""
import math

import numpy as np

from . import _validate as V
from ._device import is_dask_array
from ._dtypes import compute, compute_eps
from ._layout import layout
from .stats import _data, _host_moments

__all__ = ["zscore", "zscore_forward", "zscore_backward",
           "minmax_scale", "minmax_scale_forward", "minmax_scale_backward",
           "normalize", "normalize_forward", "normalize_backward", "ScalingSaved"]


class ScalingSaved:
    """What a data-normalization forward keeps for its backward: op and the per-position
    statistics in the keepdims shape (read-only attributes), the input and the parameters
    (private). Holds a reference to x, as autograd does."""

    __slots__ = ("_op", "_x", "_stats", "_params", "_axes", "_gpu")

    def __init__(self, op, x, stats, params, axes, gpu=None):
        self._op, self._x, self._stats, self._params, self._axes = op, x, stats, params, axes
        self._gpu = gpu

    @property
    def op(self):
        return self._op

    @property
    def stats(self):
        """The statistics the forward used (float64, keepdims shape), by name."""
        return dict(self._stats)

    def __repr__(self):
        return f"ScalingSaved(op={self._op!r}, stats={sorted(self._stats)})"


def _transform(x, lay, xk, mean, scale, shift, out):
    """y = (x - mean)*scale + shift per slot (float64 slot arrays), into out when given."""
    from .cpu import _host
    yk = None if out is None else lay.view(out)
    y = out
    if yk is None:
        yk, y = lay.empty(x.dtype)
    _host.data_affine(xk, lay, mean, scale, shift, yk)
    if out is not None and y is not out:
        np.copyto(out, y)
        return out
    return y


def _apply(x, axes, mean, scale, shift):
    """(x - mean)*scale + shift for NumPy x with statistics of x's keepdims shape (size 1 on
    the reduced axes; or scalars), by the elementwise kernels in x's dtype, into a fresh
    array. axes None: the axes where scale has size 1. (The Dask path's block transform.)"""
    from .cpu import _host
    if axes is None:
        s = np.shape(scale)
        axes = tuple(a for a in range(x.ndim) if s[a] == 1)
    lay = layout(x, tuple(axes))
    xk = lay.read(x)
    yk, y = lay.empty(x.dtype)

    def slots(v):
        return lay.slots(np.broadcast_to(np.asarray(v, np.float64), lay.keepdims_shape))
    _host.data_affine(xk, lay, slots(mean), slots(scale), slots(shift), yk)
    return y


def _keep(lay, v):
    """A slot statistic in the keepdims shape (for broadcasting against x)."""
    return lay.stats(v).reshape(lay.keepdims_shape)


# ---------------------------------------------------------------------------------------------
# zscore

def _zscore(a, axis, ddof, nan_policy, out, keep):
    if is_dask_array(a):
        from . import dask
        return dask.zscore(a, axis, ddof, nan_policy, out), None
    x = V.data_array(a, "a")
    if not isinstance(x, np.ndarray):
        return _zscore_gpu(x, axis, ddof, nan_policy, out, keep)
    ddof = V.ddof(ddof)
    x, axes, nan_policy = _data(x, axis, nan_policy)
    out = V.data_out(out, x.shape, x.dtype, x)
    lay, xk, (count, mean, m2, *_) = _host_moments(x, axes, nan_policy, False)
    dof = count - ddof
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.where(dof > 0, m2 / np.where(dof > 0, dof, 1.0), np.nan))
        mean = np.where(count > 0, mean, np.nan)
        # scipy's rule: a slice whose std is within the dtype's resolution of its mean is
        # constant, and its z-scores are NaN
        inv = np.where(std <= np.abs(compute_eps(x.dtype) * mean), np.nan, 1.0 / std)
    y = _transform(x, lay, xk, mean, inv, 0.0, out)
    saved = None
    if keep:
        saved = ScalingSaved("zscore", x, dict(mean=_keep(lay, mean), inv_std=_keep(lay, inv),
                                               count=_keep(lay, count)),
                             dict(ddof=ddof, nan_policy=nan_policy), axes)
    return y, saved


def zscore(a, axis=0, ddof=0, nan_policy="propagate", *, out=None):
    """z-scores (a - mean)/std along `axis`, as scipy.stats.zscore: std with `ddof` degrees of
    freedom; a slice whose std is within the dtype's resolution of its mean (constant) gives
    NaN; nan_policy 'propagate' (a NaN makes its slice NaN), 'omit' (NaN left out of the
    statistics and kept in place in the output) or 'raise'. axis=None: over the whole array."""
    return _zscore(a, axis, ddof, nan_policy, out, False)[0]


def zscore_forward(a, axis=0, ddof=0, nan_policy="propagate", *, out=None):
    """`zscore` returning (y, saved) for `zscore_backward`."""
    return _zscore(a, axis, ddof, nan_policy, out, True)


def zscore_backward(dy, saved):
    """dx of a `zscore_forward`: with y the z-scores, g = dy and n the values of a slice,

        dx = (g - mean(g) - y*sum(g*y)/(n - ddof)) / std

    over the values that entered the statistics; NaN where x is NaN (nan_policy='omit')."""
    x, dy = _grad_args(dy, saved, "zscore")
    if saved._gpu is not None:
        return _zscore_gpu_backward(dy, saved)
    st = saved._stats
    axes = saved._axes
    xf = x.astype(np.float64)
    g = dy.astype(np.float64)
    ok = ~np.isnan(xf) if saved._params["nan_policy"] == "omit" else np.ones(x.shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = (xf - st["mean"]) * st["inv_std"]
        gv = np.where(ok, g, 0.0)
        yv = np.where(ok, y, 0.0)
        n = st["count"]
        sg = gv.sum(axis=axes, keepdims=True)
        sgy = (gv * yv).sum(axis=axes, keepdims=True)
        dx = st["inv_std"] * (g - sg / n - y * sgy / (n - saved._params["ddof"]))
    dx = np.where(ok, dx, np.nan)
    return dx.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# minmax_scale

def _minmax(X, feature_range, axis, copy, out, keep):
    if is_dask_array(X):
        from . import dask
        return dask.minmax_scale(X, feature_range, axis, out), None
    x = V.data_array(X, "X")
    if not isinstance(x, np.ndarray):
        raise ValueError("minmax_scale runs on the CPU only: of the data-normalization "
                         "functions, zscore (nan_policy='propagate', trailing or leading "
                         "axes) runs on the GPU; copy X to the host")
    lo_r, hi_r = V.feature_range(feature_range)
    x, axes, _ = _data(x, axis, "omit")
    if not copy and out is None and x is X:
        out = X  # scikit-learn's copy=False: in place where X is already a float array
    out = V.data_out(out, x.shape, x.dtype, x)
    lay, xk, (_, _, _, dmin, dmax, nans) = _host_moments(x, axes, "omit", True, False)
    empty = nans == lay.count  # no value but NaN: NaN statistics, as np.nanmin's
    dmin = np.where(empty, np.nan, dmin)
    dmax = np.where(empty, np.nan, dmax)
    scale, _ = _minmax_scale(dmin, dmax, (lo_r, hi_r), x.dtype)
    y = _transform(x, lay, xk, dmin, scale, lo_r, out)
    saved = None
    if keep:
        saved = ScalingSaved("minmax_scale", x, dict(data_min=_keep(lay, dmin),
                                                     data_max=_keep(lay, dmax),
                                                     scale=_keep(lay, scale)),
                             dict(feature_range=(lo_r, hi_r)), axes)
    return y, saved


def _minmax_scale(dmin, dmax, feature_range, dtype):
    """scikit-learn's scale_ and whether each range counts as zero: a range below 10 eps of
    the data's dtype is taken as 1 (its _handle_zeros_in_scale), so constant features map to
    feature_range[0]."""
    data_range = dmax - dmin
    with np.errstate(invalid="ignore"):
        zero = data_range.astype(compute(dtype)) < 10 * compute_eps(dtype)
    return (feature_range[1] - feature_range[0]) / np.where(zero, 1.0, data_range), zero


def minmax_scale(X, feature_range=(0, 1), *, axis=0, copy=True, out=None):
    """Each slice along `axis` scaled to feature_range, as sklearn.preprocessing.minmax_scale:
    (X - min)/(max - min)*(hi - lo) + lo, with NaN left out of min and max and kept in the
    output, and constant slices mapped to lo. axis: an int, a tuple or None (any axes, where
    scikit-learn takes 0 or 1). copy=False scales X in place when it is a float array."""
    return _minmax(X, feature_range, axis, copy, out, False)[0]


def minmax_scale_forward(X, feature_range=(0, 1), *, axis=0, out=None):
    """`minmax_scale` returning (y, saved) for `minmax_scale_backward`."""
    return _minmax(X, feature_range, axis, True, out, True)


def minmax_scale_backward(dy, saved):
    """dx of a `minmax_scale_forward`, with torch's amin/amax rule at ties (the gradient of the
    min, or max, shared evenly by every value equal to it): with s = scale,
    t = (x - min)/(max - min) and g = dy,

        dx = s*g - s*[x == min]/k_min*sum(g*(1 - t)) - s*[x == max]/k_max*sum(g*t)

    (a constant slice, whose range counts as 1: dx = s*(g - [x == min]/k_min*sum(g))); NaN where
    x is NaN."""
    x, dy = _grad_args(dy, saved, "minmax_scale")
    st = saved._stats
    axes = saved._axes
    xf = x.astype(np.float64)
    g = dy.astype(np.float64)
    ok = ~np.isnan(xf)
    gv = np.where(ok, g, 0.0)
    s, mn, mx = st["scale"], st["data_min"], st["data_max"]
    _, zero = _minmax_scale(mn, mx, saved._params["feature_range"], x.dtype)
    at_min = ok & (xf == mn)
    at_max = ok & (xf == mx)
    k_min = at_min.sum(axis=axes, keepdims=True)
    k_max = at_max.sum(axis=axes, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(zero, 0.0, (xf - mn) / np.where(zero, 1.0, mx - mn))
        t = np.where(ok, t, 0.0)
        g_min = -s * np.where(zero, gv.sum(axis=axes, keepdims=True),
                              (gv * (1.0 - t)).sum(axis=axes, keepdims=True))
        g_max = np.where(zero, 0.0, -s * (gv * t).sum(axis=axes, keepdims=True))
        dx = s * g + at_min * (g_min / k_min) + at_max * (g_max / k_max)
    dx = np.where(ok, dx, np.nan)
    return dx.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# normalize

def _normalize(x, p, dim, eps, out, keep):
    if is_dask_array(x):
        from . import dask
        return dask.normalize(x, p, dim, eps, out), None
    x = V.data_array(x, "x")
    if not isinstance(x, np.ndarray):
        raise ValueError("normalize runs on the CPU only: of the data-normalization "
                         "functions, zscore (nan_policy='propagate', trailing or leading "
                         "axes) runs on the GPU; copy x to the host")
    p = V.p_norm(p)
    eps = V.eps(eps)
    axes = V.axes(dim, x.ndim, "dim")
    out = V.data_out(out, x.shape, x.dtype, x)
    lay = layout(x, axes)
    xk = lay.read(x)
    norm = _norms(xk, lay, p)
    with np.errstate(divide="ignore"):
        scale = 1.0 / np.maximum(norm, eps)
    y = _transform(x, lay, xk, np.zeros_like(scale), scale, 0.0, out)
    saved = None
    if keep:
        saved = ScalingSaved("normalize", x, dict(norm=_keep(lay, norm)), dict(p=p, eps=eps),
                             axes)
    return y, saved


_TINY_POWER_SUM = np.finfo(np.float64).tiny * 2.0 ** 52


def _norms(xk, lay, p):
    """Per-slot Lp norms in float64. Slots whose sum of |x|^p overflowed, or fell to where
    terms may have underflowed, on finite nonzero data are summed again scaled by their
    max |x| (rare: float64 |x| beyond ~1e154 or below ~1e-146 for p = 2)."""
    from .cpu import _host
    s = _host.data_norms(xk, lay, p)
    if p == math.inf:
        return s
    with np.errstate(over="ignore"):
        norm = np.sqrt(s) if p == 2.0 else (s if p == 1.0 else s ** (1.0 / p))
    bad = ~((s > _TINY_POWER_SUM) & (s < math.inf)) & ~np.isnan(s)
    if bad.any():
        big = _host.data_norms(xk, lay, math.inf)
        for slot in np.flatnonzero(bad & (big > 0) & (big < math.inf)):
            v = np.abs(_slot_values(xk, lay, slot).astype(np.float64)) / big[slot]
            norm[slot] = big[slot] * (np.sqrt(np.dot(v, v)) if p == 2.0
                                      else np.sum(v ** p) ** (1.0 / p))
    return norm


def _slot_values(xk, lay, slot):
    """The values of one slot of the kernel array, flat (the rare rescaling path)."""
    if lay.kind == "rows":
        return xk[slot]
    if lay.kind == "columns":
        A, N, M = lay.dims
        return xk[slot // M, :, slot % M]
    return xk[:, slot, :].ravel()


def normalize(x, p=2.0, dim=1, eps=1e-12, *, out=None):
    """x / max(||x||_p, eps) along `dim`, as torch.nn.functional.normalize: p > 0 (1, 2, inf
    or any other), dim an int or a tuple."""
    return _normalize(x, p, dim, eps, out, False)[0]


def normalize_forward(x, p=2.0, dim=1, eps=1e-12, *, out=None):
    """`normalize` returning (y, saved) for `normalize_backward`."""
    return _normalize(x, p, dim, eps, out, True)


def normalize_backward(dy, saved):
    """dx of a `normalize_forward`, as torch's autograd gives it for x / norm.clamp_min(eps):
    where ||x|| >= eps, dx = g/N - sum(g*x)/N^2 * dN/dx with dN/dx = sgn(x)*|x|^(p-1)/N^(p-1)
    (p = inf: sgn(x)/k at the k values of largest |x|; 0 where x = 0 for p < 1); elsewhere
    dx = g/eps."""
    x, dy = _grad_args(dy, saved, "normalize")
    axes = saved._axes
    p, eps = saved._params["p"], saved._params["eps"]
    N = saved._stats["norm"]
    xf = x.astype(np.float64)
    g = dy.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        gN = -(g * xf).sum(axis=axes, keepdims=True) / (N * N)  # d loss / d N
        ax = np.abs(xf)
        sgn = np.sign(xf)
        if p == math.inf:
            mask = (ax == N) | np.isnan(ax)
            dN = sgn * mask / mask.sum(axis=axes, keepdims=True)
        elif p == 2.0:
            dN = xf / N
        elif p == 1.0:
            dN = sgn
        else:
            dN = sgn * ax ** (p - 1) / N ** (p - 1)
            if p < 1.0:
                dN = np.where(xf == 0, 0.0, dN)
        dN = np.where(N == 0, 0.0, dN)
        dx = np.where(N >= eps, g / N + gN * dN, g / eps)
    return dx.astype(x.dtype)


def _grad_args(dy, saved, op):
    if not isinstance(saved, ScalingSaved):
        raise TypeError(f"saved must be the record returned by {op}_forward, "
                        f"got {type(saved).__name__}")
    if saved.op != op:
        raise TypeError(f"saved comes from {saved.op}_forward, not {op}_forward")
    x = saved._x
    if saved._gpu is not None:
        return x, dy
    dy = V.data_array(dy, "dy")
    if not isinstance(dy, np.ndarray):
        raise ValueError("dy is on the GPU but the forward ran on the CPU: pass a NumPy dy")
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the forward output's shape {x.shape}, got {dy.shape}")
    return x, dy


# ---------------------------------------------------------------------------------------------
# zscore on the GPU: the reduced axes trailing (rows kernels, as layer_norm) or leading (column
# kernels, as batch_norm in training), with eps = 0 and the ddof correction as the weight:
# (x - mean)*rstd*sqrt((n - ddof)/n) = (x - mean)/std_ddof.

def _zscore_gpu(x, axis, ddof, nan_policy, out, keep):
    from ._placement import GpuPlace
    from ._saved import Saved
    ddof = V.ddof(ddof)
    nan_policy = V.nan_policy(nan_policy)
    axes = V.axes(axis, x.ndim)
    if nan_policy != "propagate":
        raise ValueError(f"zscore with nan_policy={nan_policy!r} runs on the CPU only; on the "
                         "GPU, nan_policy='propagate'")
    k = len(axes)
    trailing = axes == tuple(range(x.ndim - k, x.ndim))
    leading = axes == tuple(range(k))
    if not (trailing or leading):
        raise ValueError(f"zscore on the GPU reduces the trailing or the leading axes of x; "
                         f"axis={axis!r} of an array of {x.ndim} dimensions is neither: copy "
                         "x to the host")
    out = V.out_array(out, x, may_alias=not keep)
    where = GpuPlace(False, x, x)
    host = where.host
    n = math.prod(x.shape[a] for a in axes)
    c = math.sqrt((n - ddof) / n) if n > ddof else math.nan
    # eps: the smallest float64, not 0: var + 5e-324 is var for every variance above ~1e-290,
    # and a constant slice gets a finite rstd (then NaN by scipy's rule below) instead of a
    # division by zero (an error in Numba's CUDA simulator, inf on a GPU)
    eps = 5e-324
    dt = np.dtype(x.dtype)
    if trailing:
        R = x.size // n if n else 0
        weight = host.param(None, n, dt, c)
        geometry = ("rows", R, n, 1, 1, n, True)
        y, mean64, rstd64, xk = host.rows_forward(x, geometry, weight, None, eps,
                                                  where.target(out))
    else:
        M = x.size // n if n else 0
        xk = x.reshape(n, M)
        weight = host.param(None, M, dt, c)
        y, mean64, rstd64, xk = host.channels_forward(xk, True, eps, 0.0, None, None, weight,
                                                      None, where.target(out))
        y = y.reshape(x.shape)
        geometry = ("channels", True)
    _flag_constant_gpu(y, mean64, rstd64, c, dt, trailing, n)
    saved = None
    if keep:
        saved = ScalingSaved("zscore", x, {}, dict(ddof=ddof, nan_policy=nan_policy), axes,
                             gpu=(Saved("zscore", xk, mean64, rstd64, weight, None, geometry,
                                        xk.shape, where, (mean64.size,)), where))
    return where.deliver(y, out), saved


def _flag_constant_gpu(y, mean64, rstd64, c, dt, trailing, n):
    """scipy's constant-slice rule on the GPU result: slices with std <= eps*|mean| set to
    NaN (the statistics come to the host; the few rows or columns flagged are rewritten)."""
    mean = mean64.copy_to_host()
    std = 1.0 / (rstd64.copy_to_host() * c)
    flag = np.flatnonzero(std <= np.abs(compute_eps(dt) * mean))
    if not flag.size:
        return
    y2 = y.reshape(mean.size, n) if trailing else y.reshape(n, mean.size)
    host = y2.copy_to_host()
    if trailing:
        host[flag] = np.nan
    else:
        host[:, flag] = np.nan
    y2.copy_to_device(host)


def _zscore_gpu_backward(dy, saved):
    """The rows/channels backward of the layer_norm/batch_norm form of the forward: with weight
    sqrt((n - ddof)/n) it is zscore's dx (see zscore_backward)."""
    from ._device import is_device_array
    record, where = saved._gpu
    if not is_device_array(dy):
        raise ValueError("dy is a NumPy array but the forward ran on the GPU: pass a GPU dy")
    dy = V.device_array(dy, "dy")
    x = saved._x
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"dy must have the forward output's shape {x.shape}, got {dy.shape}")
    host = where.host
    dyk = dy.reshape(record._x.shape)
    if record._geometry[0] == "rows":
        dx = host.rows_backward(dyk, record)[0]
    else:
        dx = host.channels_backward(dyk, record)[0]
    return where.deliver(dx.reshape(x.shape), None)
