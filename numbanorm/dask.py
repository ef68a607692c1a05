"""numbanorm on Dask arrays: out of core and on a cluster, with no new concepts.

Pass a Dask array to zscore, minmax_scale, normalize, moments, the scalers' fit /
partial_fit / transform / inverse_transform, or to layer_norm, rms_norm, group_norm,
instance_norm and batch_norm, and get a lazy Dask array (or lazy statistics) back, chunked as
the input; nothing runs until you compute it. Dask is an optional extra (`pip install
numbanorm[dask]`); numbanorm imports it only when it meets a Dask array.

How it runs:
- Statistics are one tree reduction (dask.array.reduction): the chunk step is numbanorm's
  moments kernel on each block (count, mean, M2, min, max of the block's values, a structured
  record per output position), the combine and aggregate steps Chan merges of those records
  in a fixed order. Each chunk is read once for the statistics, and no rechunking happens when
  the reduced axes span chunks: that is what mergeable statistics are for.
- The transform is a map_blocks with the merged statistics: each block normalised by the
  elementwise kernels, in its own dtype. It reads the input again through a clone of its
  graph bound to run after the statistics (dask.graph_manipulation.bind), so no chunk is held
  in memory between the two passes: out of core, peak memory is the chunks in flight, and each
  chunk is read twice (an expensive input is computed twice: persist it first).
- A deep-learning op whose normalisation groups each lie inside one chunk runs block by block
  (map_blocks of the NumPy op); otherwise the statistics take the two steps above. No silent
  rechunk of the data.
- Threads: the kernels release the GIL, so Dask's worker threads run them in parallel. Inside
  a Dask task numbanorm uses TASK_THREADS Numba threads (default 1: Dask already runs one task
  per core; a task's kernels on all cores as well would put cores x cores threads on the
  machine). set_task_threads(n) changes it (or NUMBANORM_DASK_TASK_THREADS); 0 means Numba's
  default for the process.

Rules that differ from the NumPy path:
- The *_forward functions return (y, None) on Dask arrays: the Dask path is for inference and
  data preparation; backward passes need NumPy (or GPU) arrays.
- Training-mode batch_norm and instance_norm with running buffers raise a ValueError: the
  buffers are updated in place, which a lazy graph cannot do at the time of the call, and
  doing it at compute() would be a side effect no Dask user expects. Take the statistics with
  numbanorm.moments(x, axis=(0, 2, ...)) and update the buffers from them after computing, or
  pass running_mean=running_var=None. Eval mode reads the buffers and is elementwise.
- nan_policy='raise' can only see NaN when the data is read: it raises at compute().
  Everything that can be known before (axes, shapes, dtypes, arguments) raises when the graph
  is built.
"""
import math
import os

import numpy as np

from . import _validate as V
from ._device import is_dask_array
from ._dtypes import compute_eps, is_float

__all__ = ["is_dask_array", "set_task_threads", "TASK_THREADS"]

TASK_THREADS = int(os.environ.get("NUMBANORM_DASK_TASK_THREADS", "1"))

RECORD = np.dtype([("count", "f8"), ("mean", "f8"), ("m2", "f8"), ("min", "f8"),
                   ("max", "f8")])


def set_task_threads(n):
    """Numba threads each Dask task's kernels use (0: Numba's default for the process)."""
    global TASK_THREADS
    TASK_THREADS = V.positive_int(n, "n") if n else 0


class _task_threads:
    """Run a block's kernels on TASK_THREADS Numba threads (numba.set_num_threads is per
    calling thread, so concurrent Dask tasks each set their own)."""

    def __enter__(self):
        import numba
        self._old = numba.get_num_threads()
        n = TASK_THREADS or numba.config.NUMBA_NUM_THREADS
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

    def __exit__(self, *exc):
        import numba
        numba.set_num_threads(self._old)


def _no_out(out):
    if out is not None:
        raise ValueError("out= is not taken with a Dask array: the result is lazy (store it "
                         "with dask.array.store or to_zarr)")


def _channel_args(x, weight, bias, running_mean, running_var, momentum, eps, ndim, what):
    """x as floats and the checked per-channel arguments of batch_norm/instance_norm."""
    x = _as_float(x, "x")
    V.ndim_at_least(x, "x", ndim, what)
    C = x.shape[1]
    params = _check_params(x.dtype, (C,), (weight, "weight"), (bias, "bias"),
                           (running_mean, "running_mean"), (running_var, "running_var"))
    if (params[2] is None) != (params[3] is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    V.momentum(momentum)
    return (x, *params, V.eps(eps))


def _da():
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - a Dask array came without Dask?
        raise ImportError("numbanorm's Dask path needs dask[array]: pip install "
                          "numbanorm[dask]") from exc
    return da


def _as_float(x, name):
    """A Dask array of float16, bfloat16, float32 or float64 as it is, integers and booleans
    as float64, lazily; complex refused now."""
    dt = np.dtype(x.dtype)
    if is_float(dt):
        return x
    if dt.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {dt}")
    if dt.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers (float16, bfloat16, float32, "
                        f"float64, integers or booleans), got dtype {dt}")
    return x.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# the mergeable-moments reduction

def _keep_shape(shape, axes):
    return tuple(1 if a in axes else n for a, n in enumerate(shape))


def _record(m, shape):
    out = np.empty(shape, RECORD)
    for f in RECORD.names:
        out[f] = getattr(m, f).reshape(shape)
    return out


def _moments_chunk(x, axis, keepdims, nan_policy):
    from .stats import moments
    axes = tuple(axis)
    with _task_threads():
        m = moments(x, axes, nan_policy)
    if nan_policy == "omit":  # np.nanmean's NaN for no values; an empty record merges as 0
        m.mean = np.where(m.count > 0, m.mean, 0.0)
    return _record(m, _keep_shape(x.shape, axes))


def _merge_records(parts, axis, keepdims):
    """The records of `parts` (concatenated along the reduced axes) merged along them, in
    order, into one record per kept position (Chan's formula; min and max)."""
    from .stats import _merge
    axes = tuple(axis)
    kept = [a for a in range(parts.ndim) if a not in axes]
    flat = parts.transpose(list(axes) + kept).reshape((-1,) + tuple(parts.shape[a]
                                                                    for a in kept))
    n, mean, m2 = flat["count"][0], flat["mean"][0], flat["m2"][0]
    lo, hi = flat["min"][0], flat["max"][0]
    for k in range(1, flat.shape[0]):
        n, mean, m2 = _merge(n, mean, m2, flat["count"][k], flat["mean"][k], flat["m2"][k])
        lo = np.minimum(lo, flat["min"][k])
        hi = np.maximum(hi, flat["max"][k])
    out = np.empty(_keep_shape(parts.shape, axes), RECORD)
    for f, v in zip(RECORD.names, (n, mean, m2, lo, hi)):
        out[f] = np.asarray(v).reshape(out.shape)
    return out if keepdims else out.squeeze(axes)


def moment_records(x, axes, nan_policy):
    """The lazy structured record (count, mean, m2, min, max) per kept position, keepdims
    shape: one tree reduction over the chunks."""
    from functools import partial
    da = _da()
    return da.reduction(x, partial(_moments_chunk, nan_policy=nan_policy), _merge_records,
                        combine=_merge_records, axis=axes, keepdims=True, dtype=RECORD,
                        meta=np.empty((0,) * x.ndim, RECORD), name="numbanorm-moments")


def moments(x, axis, nan_policy):
    """numbanorm.moments of a Dask array: a Moments whose fields are lazy Dask arrays of one
    shared reduction (compute them together: Moments.compute())."""
    from .stats import Moments
    x = _as_float(x, "a")
    axes = V.axes(axis, x.ndim)
    nan_policy = V.nan_policy(nan_policy)
    rec = moment_records(x, axes, nan_policy if nan_policy != "raise" else "raise")
    rec = rec.squeeze(axis=axes) if axes else rec
    count = rec["count"]
    da = _da()
    mean = da.where(count > 0, rec["mean"], np.nan)
    return Moments._lazy(count, mean, rec["m2"], rec["min"], rec["max"], axis, nan_policy)


# ---------------------------------------------------------------------------------------------
# transforms: map_blocks with per-position statistics (keepdims shape)

def _affine_block(x, mean, scale, shift, axes):
    """(x - mean)*scale + shift on one block, the statistics broadcast over the reduced axes
    (numbanorm's elementwise kernels, x's dtype)."""
    from .scaling import _apply
    with _task_threads():
        return _apply(x, axes, mean, scale, shift)


def _second_read(x, stats):
    """x again, for a pass after `stats` (small Dask arrays computed from x): a clone of x's
    graph bound to run after them (dask.graph_manipulation.bind). Without it, the chunks x's
    statistics read are the chunks the transform reads, and Dask must keep every one in memory
    until the statistics are complete: the whole array, out of core. With it, each chunk is read
    twice, once for the statistics and once for the transform, and held by neither (an
    expensive x is computed twice: persist it first)."""
    from dask.graph_manipulation import bind
    deps = [s for s in stats if is_dask_array(s)]
    return bind(x, deps) if deps else x


def _affine(x, axes, mean, scale, shift, second_read=True):
    """(x - mean)*scale + shift by map_blocks; second_read: the statistics come from x (see
    _second_read), not from fitted constants."""
    da = _da()
    if second_read:
        x = _second_read(x, (mean, scale, shift))
    return da.map_blocks(_affine_block, x, mean, scale, shift, axes=axes, dtype=x.dtype,
                         meta=np.empty((0,) * x.ndim, x.dtype), token="numbanorm-transform")


def zscore(a, axis, ddof, nan_policy, out):
    _no_out(out)
    x = _as_float(a, "a")
    axes = V.axes(axis, x.ndim)
    ddof = V.ddof(ddof)
    nan_policy = V.nan_policy(nan_policy)
    rec = moment_records(x, axes, nan_policy)
    da = _da()
    count, mean, m2 = rec["count"], rec["mean"], rec["m2"]
    dof = count - ddof
    std = da.sqrt(da.where(dof > 0, m2 / da.where(dof > 0, dof, 1.0), np.nan))
    mean = da.where(count > 0, mean, np.nan)
    eps = compute_eps(x.dtype)
    inv = da.where(std <= abs(eps * mean), np.nan, 1.0 / std)
    return _affine(x, axes, mean, inv, 0.0)


def minmax_scale(X, feature_range, axis, out):
    _no_out(out)
    from .scaling import _minmax_scale
    x = _as_float(X, "X")
    lo, hi = V.feature_range(feature_range)
    axes = V.axes(axis, x.ndim)
    rec = moment_records(x, axes, "omit")
    da = _da()
    dmin = da.where(rec["count"] > 0, rec["min"], np.nan)
    dmax = da.where(rec["count"] > 0, rec["max"], np.nan)
    scale = da.map_blocks(lambda a, b: _minmax_scale(a, b, (lo, hi), x.dtype)[0], dmin, dmax,
                          dtype=np.float64)
    return _affine(x, axes, dmin, scale, lo)


def _norm_chunk(x, axis, keepdims, p):
    from .scaling import _norms
    from ._layout import layout
    with _task_threads():
        lay = layout(x, tuple(axis))
        return lay.stats(_norms(lay.read(x), lay, p)).reshape(_keep_shape(x.shape, axis))


def _merge_norms(parts, axis, keepdims, p):
    """Lp norms of chunks (concatenated along the reduced axes) as the norm of the union:
    max for p = inf, else M*sum((N_k/M)^p)^(1/p) with M the largest (no overflow)."""
    axes = tuple(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        big = parts.max(axis=axes, keepdims=True)
        if p == math.inf:
            out = big
        else:
            scaled = np.where(big > 0, parts / np.where(big > 0, big, 1.0), 0.0)
            out = big * (scaled ** p).sum(axis=axes, keepdims=True) ** (1.0 / p)
            out = np.where(np.isnan(parts).any(axis=axes, keepdims=True), np.nan, out)
            out = np.where(np.isinf(big), np.inf, out)
    return out if keepdims else out.squeeze(axes)


def normalize(x, p, dim, eps, out):
    _no_out(out)
    from functools import partial
    x = _as_float(x, "x")
    p = V.p_norm(p)
    eps = V.eps(eps)
    axes = V.axes(dim, x.ndim, "dim")
    da = _da()
    merge = partial(_merge_norms, p=p)
    norm = da.reduction(x, partial(_norm_chunk, p=p), merge, combine=merge, axis=axes,
                        keepdims=True, dtype=np.float64, name="numbanorm-norms")
    return _affine(x, axes, da.zeros_like(norm), 1.0 / da.maximum(norm, eps), 0.0)


# ---------------------------------------------------------------------------------------------
# the deep-learning ops

def _whole(x, axes):
    """Whether every chunk holds the full extent of the axes (groups inside one chunk)."""
    return all(len(x.chunks[a]) == 1 for a in axes)


def _param_like(p, x, axes, shape):
    """A NumPy parameter of `shape` over x's `axes` as a Dask array chunked like x there, of
    x's dimensions (size 1 elsewhere), for map_blocks."""
    da = _da()
    full = [1] * x.ndim
    for a, n in zip(axes, shape):
        full[a] = n
    arr = np.asarray(p).reshape(full)
    chunks = tuple(x.chunks[a] if a in axes else (1,) for a in range(x.ndim))
    return da.from_array(arr, chunks=chunks)


def _norm_block(x, mean, rstd, weight, bias, centered):
    """((x - mean)*rstd)*weight + bias on a block (weight, bias None or broadcastable)."""
    from .scaling import _apply
    with _task_threads():
        y = _apply(x, None, mean, rstd, 0.0) if centered else _apply(
            x, None, np.zeros_like(rstd), rstd, 0.0)
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y


def _two_step(x, axes, eps, centered, weight, bias):
    """The statistics by the moments reduction over `axes`, then the normalisation by
    map_blocks: (x - mean)*rstd*weight + bias (rms: x*rstd*weight, rstd from mean(x^2))."""
    da = _da()
    rec = moment_records(x, axes, "propagate")
    n, mean, m2 = rec["count"], rec["mean"], rec["m2"]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2 / n if centered else m2 / n + mean * mean
    rstd = 1.0 / da.sqrt(var + eps)
    args = [_second_read(x, (mean, rstd)), mean, rstd, weight, bias]
    return da.map_blocks(_norm_block, *args, centered=centered, dtype=x.dtype,
                         meta=np.empty((0,) * x.ndim, x.dtype), token="numbanorm-normalize")


def _blockwise(fn, x):
    """fn(block, first channel of the block) on every block (whole groups in each)."""
    da = _da()
    starts = np.cumsum((0,) + x.chunks[1]) if x.ndim > 1 else np.zeros(1, int)

    def run(block, block_info=None):
        c0 = 0 if block_info is None or x.ndim < 2 else int(
            starts[block_info[0]["chunk-location"][1]])
        with _task_threads():
            return fn(block, c0)
    return da.map_blocks(run, x, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype),
                         token="numbanorm-blocks")


def _check_params(dtype, shape, *params):
    """The (array or None, name) parameters of one call checked as the functional ops check
    them (NumPy arrays of `shape`, one dtype: x's, or float32 for 16-bit x), as a list."""
    checked = []
    for p, name in params:
        if is_dask_array(p):
            raise TypeError(f"{name} must be a NumPy array with Dask x (parameters are small)")
        checked.append(V.optional_array(p, name, shape, dtype))
    V.same_param_dtype(dtype, zip(checked, (name for _, name in params)))
    return checked


def trailing_norm(x, normalized_shape, weight, bias, eps, out, centered):
    """layer_norm (centered) and rms_norm on a Dask array."""
    from . import functional as F
    _no_out(out)
    x = _as_float(x, "x")
    shape = V.normalized_shape(normalized_shape)
    V.trailing_shape(x, shape)
    weight, bias = _check_params(x.dtype, shape, (weight, "weight"), (bias, "bias"))
    eps = V.eps(eps) if eps is not None else compute_eps(x.dtype)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    if _whole(x, axes):
        if centered:
            return _blockwise(lambda b, c0: F.layer_norm(b, shape, weight, bias, eps), x)
        return _blockwise(lambda b, c0: F.rms_norm(b, shape, weight, eps), x)
    w = None if weight is None else _param_like(weight, x, axes, shape)
    b = None if bias is None else _param_like(bias, x, axes, shape)
    return _two_step(x, axes, eps, centered, w, b)


def group_norm(x, num_groups, weight, bias, eps, out):
    from . import functional as F
    _no_out(out)
    x = _as_float(x, "x")
    V.ndim_at_least(x, "x", 2, "(N, C, *spatial)")
    G = V.positive_int(num_groups, "num_groups")
    N, C = x.shape[:2]
    if C % G:
        raise ValueError(f"num_groups ({G}) must divide the number of channels ({C}) of x")
    weight, bias = _check_params(x.dtype, (C,), (weight, "weight"), (bias, "bias"))
    eps = V.eps(eps)
    Cg = C // G
    spatial = tuple(range(2, x.ndim))
    if _whole(x, spatial) and all(c % Cg == 0 for c in x.chunks[1]):
        def block(b, c0):
            c1 = c0 + b.shape[1]
            return F.group_norm(b, b.shape[1] // Cg,
                                None if weight is None else weight[c0:c1],
                                None if bias is None else bias[c0:c1], eps)
        return _blockwise(block, x)
    # per-channel moments over the spatial axes, merged over each group's channels
    da = _da()
    rec = moment_records(x, spatial, "propagate") if spatial else x.map_blocks(
        _identity_records, dtype=RECORD, meta=np.empty((0,) * x.ndim, RECORD))
    rec = rec.rechunk({1: -1})  # (N, C, 1, ...) records: small, one chunk along C
    grouped = rec.map_blocks(_group_records, Cg, dtype=RECORD,
                             meta=np.empty((0,) * x.ndim, RECORD))
    mean, m2, n = grouped["mean"], grouped["m2"], grouped["count"]
    rstd = 1.0 / da.sqrt(m2 / n + eps)
    mean = mean.rechunk({1: x.chunks[1]})
    rstd = rstd.rechunk({1: x.chunks[1]})
    w = None if weight is None else _param_like(weight, x, (1,), (C,))
    b = None if bias is None else _param_like(bias, x, (1,), (C,))
    x = _second_read(x, (mean, rstd))
    return da.map_blocks(_norm_block, x, mean, rstd, w, b, centered=True, dtype=x.dtype,
                         meta=np.empty((0,) * x.ndim, x.dtype), token="numbanorm-normalize")


def _identity_records(x):
    """The record of each single value (group_norm of (N, C) input: no spatial axes)."""
    out = np.empty(x.shape, RECORD)
    out["count"] = 1.0
    out["mean"] = x
    out["m2"] = 0.0
    out["min"] = x
    out["max"] = x
    return out


def _group_records(rec, Cg):
    """Per-channel records (N, C, 1, ...) merged over each group's Cg channels, in channel
    order, and given back to every channel of the group."""
    N, C = rec.shape[:2]
    g = rec.reshape((N, C // Cg, Cg) + rec.shape[2:])
    merged = _merge_records(g, (2,), True)
    return np.broadcast_to(merged, g.shape).reshape(rec.shape).copy()


def instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                  out):
    from . import functional as F
    _no_out(out)
    x, weight, bias, running_mean, running_var, eps = _channel_args(
        x, weight, bias, running_mean, running_var, momentum, eps, 3, "(N, C, *spatial)")
    C = x.shape[1]
    if not use_input_stats:
        if running_mean is None:
            raise ValueError("running_mean and running_var are required when "
                             "use_input_stats=False")
        return _running(x, running_mean, running_var, weight, bias, eps)
    if running_mean is not None:
        raise ValueError(_RUNNING_RULE.format(op="instance_norm"))
    spatial = tuple(range(2, x.ndim))
    if _whole(x, spatial):
        def block(b, c0):
            c1 = c0 + b.shape[1]
            return F.instance_norm(b, None, None, None if weight is None else weight[c0:c1],
                                   None if bias is None else bias[c0:c1], True, 0.1, eps)
        return _blockwise(block, x)
    w = None if weight is None else _param_like(weight, x, (1,), (C,))
    b = None if bias is None else _param_like(bias, x, (1,), (C,))
    return _two_step(x, spatial, eps, True, w, b)


_RUNNING_RULE = (
    "{op} in training mode updates running_mean and running_var in place, which a lazy Dask "
    "graph cannot do: pass running_mean=running_var=None and update the buffers yourself from "
    "numbanorm.moments(x, axis=(0, 2, ...)).compute() (mean, var(ddof=1)), or compute x first")


def _running(x, running_mean, running_var, weight, bias, eps):
    """Normalisation by fixed per-channel statistics: elementwise, block by block."""
    C = x.shape[1]
    mean = running_mean.astype(np.float64)
    rstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    scale = rstd * (1.0 if weight is None else weight.astype(np.float64))
    shift = 0.0 if bias is None else bias.astype(np.float64)
    mean_d = _param_like(mean, x, (1,), (C,))
    scale_d = _param_like(scale, x, (1,), (C,))
    shift_d = _param_like(np.broadcast_to(shift, (C,)), x, (1,), (C,))
    return _affine(x, tuple(a for a in range(x.ndim) if a != 1), mean_d, scale_d, shift_d)


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out):
    _no_out(out)
    x, weight, bias, running_mean, running_var, eps = _channel_args(
        x, weight, bias, running_mean, running_var, momentum, eps, 2,
        "(N, C) or (N, C, *spatial)")
    C = x.shape[1]
    if not training:
        if running_mean is None:
            raise ValueError("running_mean and running_var are required when training=False "
                             "(eval mode normalises with the running statistics)")
        return _running(x, running_mean, running_var, weight, bias, eps)
    if running_mean is not None:
        raise ValueError(_RUNNING_RULE.format(op="batch_norm"))
    if x.shape[0] * math.prod(x.shape[2:]) == 1:
        raise ValueError("Expected more than 1 value per channel when training, got input "
                         f"size {x.shape}")
    axes = tuple(a for a in range(x.ndim) if a != 1)
    w = None if weight is None else _param_like(weight, x, (1,), (C,))
    b = None if bias is None else _param_like(bias, x, (1,), (C,))
    return _two_step(x, axes, eps, True, w, b)
