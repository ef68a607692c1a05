"""The Dask backend: the host contract of numbanorm.cpu._host (see its docstring) on Dask
arrays, each function building a lazy graph whose tasks are CPU host calls on blocks. The
public functions reach it through numbanorm._placement (DASK) as they reach the CPU and the
GPU; it imports numbanorm.cpu._host and nothing above the backends.

    rows_forward(x, geometry, weight, bias, eps, y=None)         -> (y, None, None, None)
    channels_forward(x, training, eps, momentum, running_mean, running_var, weight, bias,
                     y=None)                                     -> (y, None, None, None)
    data_view(x, axes) -> view;  data_moments(view, nan_policy, want_range, want_moments=True)
    data_affine(view, mean, scale, shift, out=None);  data_norms(view, p)
    window_forward(x, size, alpha, beta, k, y=None)              -> y (x's own shape)

Results are lazy Dask arrays chunked as x; the statistics of the data functions are lazy
arrays of x's keepdims shape (view.stats / view.keep reshape them as on the other backends).
Parameters are NumPy (small). No saved record: the Dask path is for inference and data
preparation, and the *_forward functions return (y, None) on it.

How it runs:
- Statistics are one tree reduction (dask.array.reduction): the chunk step is the CPU host's
  data_moments on each block (count, mean, M2, min, max and NaN count of the block's values, a
  structured record per output position), the combine and aggregate steps Chan merges of those
  records in a fixed order. Each chunk is read once for the statistics, and no rechunking
  happens when the reduced axes span chunks: that is what mergeable statistics are for.
- The transform is a map_blocks with the merged statistics: each block normalised by the CPU
  host's data_affine, in its own dtype. It reads the input again through a clone of its graph
  bound to run after the statistics (dask.graph_manipulation.bind), so no chunk is held in
  memory between the two passes: out of core, peak memory is the chunks in flight, and each
  chunk is read twice (an expensive input is computed twice: persist it first).
- A deep-learning op whose normalisation groups each lie inside one chunk runs block by block
  (map_blocks of the CPU host's rows_forward); otherwise the statistics take the two steps
  above. No silent rechunk of the data.
- Threads: the kernels release the GIL, so Dask's worker threads run them in parallel. Inside
  a Dask task numbanorm uses TASK_THREADS Numba threads (see numbanorm.dask).
- nan_policy='raise' can only see NaN when the data is read: it raises at compute().
"""
import math
from functools import partial

import numpy as np

from .. import _validate as V
from .._chan import merge_arrays
from .._device import is_dask_array
from ..cpu import _host as cpu

TASK_THREADS = 1

RECORD = np.dtype([("count", "f8"), ("mean", "f8"), ("m2", "f8"), ("min", "f8"),
                   ("max", "f8"), ("nans", "f8")])


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


def _da():
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - a Dask array came without Dask?
        raise ImportError("numbanorm's Dask path needs dask[array]: pip install "
                          "numbanorm[dask]") from exc
    return da


def _keep_shape(shape, axes):
    return tuple(1 if a in axes else n for a, n in enumerate(shape))


# ---------------------------------------------------------------------------------------------
# the data functions: a view, the mergeable-moments reduction, the transform, the norms

class DataView:
    """Dask x for a reduction over axes (the backends' DataView interface): the statistics
    are lazy arrays of the public shape (x's without the reduced axes: the "slots"), keep(v)
    gives them the keepdims shape."""

    __slots__ = ("x", "axes", "shape", "keepdims_shape")

    def __init__(self, x, axes):
        self.x, self.axes = x, axes
        self.shape = tuple(n for a, n in enumerate(x.shape) if a not in axes)
        self.keepdims_shape = _keep_shape(x.shape, axes)

    @property
    def count(self):
        return math.prod(self.x.shape[a] for a in self.axes)

    def stats(self, v):
        return v

    def keep(self, v):
        """v (public shape, or a scalar) in the keepdims shape."""
        return v.reshape(self.keepdims_shape) if np.ndim(v) else v


def data_view(x, axes):
    return DataView(x, axes)


def _moments_chunk(x, axis, keepdims, nan_policy):
    """The record of one block: the CPU host's data_moments, in the keepdims shape."""
    axes = tuple(axis)
    with _task_threads():
        view = cpu.data_view(x, axes)
        res = cpu.data_moments(view, nan_policy, True)
    out = np.empty(_keep_shape(x.shape, axes), RECORD)
    for f, v in zip(RECORD.names, res):
        out[f] = view.keep(v)
    return out


def _merge_records(parts, axis, keepdims):
    """The records of `parts` (concatenated along the reduced axes) merged along them, in
    order, into one record per kept position (Chan's formula; min, max; NaN counts added)."""
    axes = tuple(axis)
    kept = [a for a in range(parts.ndim) if a not in axes]
    lead = math.prod(parts.shape[a] for a in axes)
    flat = parts.transpose(list(axes) + kept).reshape((lead,) + tuple(parts.shape[a]
                                                                      for a in kept))
    if not lead:  # (Dask's probe with an empty array)
        return np.empty(_keep_shape(parts.shape, axes) if keepdims else flat.shape[1:], RECORD)
    n, mean, m2 = flat["count"][0], flat["mean"][0], flat["m2"][0]
    lo, hi, nans = flat["min"][0], flat["max"][0], flat["nans"][0]
    for k in range(1, flat.shape[0]):
        n, mean, m2 = merge_arrays(n, mean, m2, flat["count"][k], flat["mean"][k],
                                   flat["m2"][k])
        lo = np.minimum(lo, flat["min"][k])
        hi = np.maximum(hi, flat["max"][k])
        nans = nans + flat["nans"][k]
    out = np.empty(_keep_shape(parts.shape, axes), RECORD)
    for f, v in zip(RECORD.names, (n, mean, m2, lo, hi, nans)):
        out[f] = np.asarray(v).reshape(out.shape)
    return out if keepdims else out.squeeze(axes)


def moment_records(x, axes, nan_policy):
    """The lazy structured record per kept position, keepdims shape: one tree reduction over
    the chunks."""
    return _da().reduction(x, partial(_moments_chunk, nan_policy=nan_policy), _merge_records,
                           combine=_merge_records, axis=axes, keepdims=True, dtype=RECORD,
                           meta=np.empty((0,) * x.ndim, RECORD), name="numbanorm-moments")


def data_moments(view, nan_policy, want_range, want_moments=True):
    """Lazy (count, mean, m2, lo, hi, nans) of the public shape, from one reduction (the
    cpu host's contract; all six are given whatever is asked)."""
    rec = moment_records(view.x, view.axes, nan_policy).reshape(view.shape)
    return tuple(rec[f] for f in RECORD.names)


def _affine_block(x, mean, scale, shift, axes):
    """(x - mean)*scale + shift on one block by the CPU host's data_affine, the statistics
    (keepdims shape, or scalars) broadcast over the reduced axes; axes None: those where
    scale has size 1."""
    if axes is None:
        s = np.shape(scale)
        axes = tuple(a for a in range(x.ndim) if s[a] == 1)
    with _task_threads():
        view = cpu.data_view(x, tuple(axes))
        lay = view.lay

        def slots(v):
            return lay.slots(np.broadcast_to(np.asarray(v, np.float64), lay.keepdims_shape))
        return cpu.data_affine(view, slots(mean), slots(scale), slots(shift))


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


def affine(x, axes, mean, scale, shift, second_read=True):
    """(x - mean)*scale + shift by map_blocks; second_read: the statistics come from x (see
    _second_read), not from fitted constants."""
    if second_read:
        x = _second_read(x, (mean, scale, shift))
    return _da().map_blocks(_affine_block, x, mean, scale, shift, axes=axes, dtype=x.dtype,
                            meta=np.empty((0,) * x.ndim, x.dtype),
                            token="numbanorm-transform")


def data_affine(view, mean, scale, shift, out=None):
    return affine(view.x, view.axes, view.keep(mean), view.keep(scale), view.keep(shift))


def _norm_chunk(x, axis, keepdims, p):
    with _task_threads():
        view = cpu.data_view(x, tuple(axis))
        return view.keep(cpu.data_norms(view, p))


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


def data_norms(view, p):
    merge = partial(_merge_norms, p=p)
    return _da().reduction(view.x, partial(_norm_chunk, p=p), merge, combine=merge,
                           axis=view.axes, keepdims=False, dtype=np.float64,
                           name="numbanorm-norms")


# ---------------------------------------------------------------------------------------------
# the deep-learning ops: the rows and channels geometries

def _whole(x, axes):
    """Whether every chunk holds the full extent of the axes (groups inside one chunk)."""
    return all(len(x.chunks[a]) == 1 for a in axes)


def param_like(p, x, axes, shape):
    """A NumPy parameter of `shape` over x's `axes` as a Dask array chunked like x there, of
    x's dimensions (size 1 elsewhere), for map_blocks."""
    full = [1] * x.ndim
    for a, n in zip(axes, shape):
        full[a] = n
    arr = np.asarray(p).reshape(full)
    chunks = tuple(x.chunks[a] if a in axes else (1,) for a in range(x.ndim))
    return _da().from_array(arr, chunks=chunks)


def _norm_block(x, mean, rstd, weight, bias, centered):
    """((x - mean)*rstd)*weight + bias on a block (weight, bias None or broadcastable)."""
    y = _affine_block(x, mean if centered else np.zeros_like(rstd), rstd, 0.0, None)
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
    return _normalise(x, mean, rstd, weight, bias, centered)


def _normalise(x, mean, rstd, weight, bias, centered):
    args = [_second_read(x, (mean, rstd)), mean, rstd, weight, bias]
    return _da().map_blocks(_norm_block, *args, centered=centered, dtype=x.dtype,
                            meta=np.empty((0,) * x.ndim, x.dtype),
                            token="numbanorm-normalize")


def _blockwise(fn, x):
    """fn(block, first channel of the block) on every block (whole groups in each)."""
    starts = np.cumsum((0,) + x.chunks[1]) if x.ndim > 1 else np.zeros(1, int)

    def run(block, block_info=None):
        c0 = 0 if block_info is None or x.ndim < 2 else int(
            starts[block_info[0]["chunk-location"][1]])
        with _task_threads():
            return fn(block, c0)
    return _da().map_blocks(run, x, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype),
                            token="numbanorm-blocks")


def _sliced(p, c0, c1):
    return None if p is None else p[c0:c1]


def rows_forward(x, geometry, weight, bias, eps, y=None):
    """The rows geometry ("rows", R, L, G, S, C, centered) on Dask x. G == 1 with S == 1:
    layer_norm / rms_norm over the trailing axes holding L values, parameters over them;
    otherwise x is (N, C, *spatial) in groups of Cg = C/G channels (group_norm; instance_norm:
    G == C), parameters per channel."""
    _, R, L, G, S, C, centered = geometry
    nd = x.ndim
    if G == 1 and S == 1:  # trailing axes: the fewest whose sizes multiply to L
        a0 = max((a for a in range(nd) if math.prod(x.shape[a:]) == L), default=nd)
        axes = tuple(range(a0, nd))
        if _whole(x, axes):
            def block(b, c0):
                return cpu.rows_forward(b, ("rows", b.size // L if L else 0, L, 1, 1, L,
                                                centered), weight, bias, eps)[0]
            return _blockwise(block, x), None, None, None
        pshape = x.shape[a0:]
        w = None if weight is None else param_like(weight, x, axes, pshape)
        b = None if bias is None else param_like(bias, x, axes, pshape)
        return _two_step(x, axes, eps, centered, w, b), None, None, None
    Cg = C // G
    spatial = tuple(range(2, nd))
    if _whole(x, spatial) and all(c % Cg == 0 for c in x.chunks[1]):
        def block(b, c0):
            Cb = b.shape[1]
            Gb = Cb // Cg
            return cpu.rows_forward(b, ("rows", b.shape[0] * Gb, L, Gb, S, Cb, True),
                                    _sliced(weight, c0, c0 + Cb), _sliced(bias, c0, c0 + Cb),
                                    eps)[0]
        return _blockwise(block, x), None, None, None
    w = None if weight is None else param_like(weight, x, (1,), (C,))
    b = None if bias is None else param_like(bias, x, (1,), (C,))
    if G == C or G == 1:  # instance_norm: the spatial axes; one group: all but the batch
        axes = spatial if G == C else tuple(range(1, nd))
        return _two_step(x, axes, eps, True, w, b), None, None, None
    # per-channel moments over the spatial axes, merged over each group's channels
    da = _da()
    rec = moment_records(x, spatial, "propagate") if spatial else x.map_blocks(
        _identity_records, dtype=RECORD, meta=np.empty((0,) * nd, RECORD))
    rec = rec.rechunk({1: -1})  # (N, C, 1, ...) records: small, one chunk along C
    grouped = rec.map_blocks(_group_records, Cg, dtype=RECORD,
                             meta=np.empty((0,) * nd, RECORD))
    mean, m2, n = grouped["mean"], grouped["m2"], grouped["count"]
    rstd = 1.0 / da.sqrt(m2 / n + eps)
    mean = mean.rechunk({1: x.chunks[1]})
    rstd = rstd.rechunk({1: x.chunks[1]})
    return _normalise(x, mean, rstd, w, b, True), None, None, None


def _identity_records(x):
    """The record of each single value (group_norm of (N, C) input: no spatial axes)."""
    out = np.empty(x.shape, RECORD)
    out["count"] = 1.0
    out["mean"] = x
    out["m2"] = 0.0
    out["min"] = x
    out["max"] = x
    out["nans"] = np.isnan(x)
    return out


def _group_records(rec, Cg):
    """Per-channel records (N, C, 1, ...) merged over each group's Cg channels, in channel
    order, and given back to every channel of the group."""
    N, C = rec.shape[:2]
    g = rec.reshape((N, C // Cg, Cg) + rec.shape[2:])
    merged = _merge_records(g, (2,), True)
    return np.broadcast_to(merged, g.shape).reshape(rec.shape).copy()


def channels_forward(x, training, eps, momentum, running_mean, running_var, weight, bias,
                     y=None):
    """batch_norm (and instance_norm in eval mode) on Dask x: in training the batch's
    statistics over every axis but 1 (no running buffers: the placement refuses them), else
    the running statistics, elementwise block by block."""
    C = x.shape[1]
    w = None if weight is None else param_like(weight, x, (1,), (C,))
    b = None if bias is None else param_like(bias, x, (1,), (C,))
    if training:
        axes = tuple(a for a in range(x.ndim) if a != 1)
        return _two_step(x, axes, eps, True, w, b), None, None, None
    mean = running_mean.astype(np.float64)
    rstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    scale = rstd * (1.0 if weight is None else weight.astype(np.float64))
    shift = 0.0 if bias is None else bias.astype(np.float64)
    stats = [param_like(np.broadcast_to(v, (C,)), x, (1,), (C,)) for v in (mean, scale, shift)]
    return affine(x, tuple(a for a in range(x.ndim) if a != 1), *stats), None, None, None


def _merged_chunks(chunks, least):
    """Adjacent chunk sizes merged until each is at least `least` (the last merged into the
    one before it when it falls short)."""
    out = []
    for c in chunks:
        if out and out[-1] < least:
            out[-1] += c
        else:
            out.append(c)
    if len(out) > 1 and out[-1] < least:
        last = out.pop()
        out[-1] += last
    return tuple(out)


def window_forward(x, size, alpha, beta, k, y=None):
    """local_response_norm on Dask x of any shape (N, C, *spatial), lazily: each block with
    size//2 channels of its neighbours on either side (dask.array.map_overlap, zeros beyond
    the first and last channel: PyTorch's padding), trimmed after; blocks holding every
    channel need no overlap. Channel chunks narrower than size//2 are merged with their
    neighbours first (map_overlap would rechunk them itself). Each value's window lies inside
    its extended block, and the block's window sums start their blocks where the whole's do
    (phase), so the values are the CPU host's on the whole array, bit for bit."""
    depth = size // 2
    if depth and len(x.chunks[1]) > 1 and min(x.chunks[1]) < depth:
        x = x.rechunk({1: _merged_chunks(x.chunks[1], depth)})
    whole = len(x.chunks[1]) == 1 or depth == 0
    starts = np.cumsum((0,) + x.chunks[1])

    def block(b, block_info=None):
        c0 = 0 if whole or block_info is None else int(
            starts[block_info[0]["chunk-location"][1]])
        with _task_threads():
            N, C = b.shape[:2]
            b3 = np.ascontiguousarray(b).reshape(N, C, -1)
            return cpu.window_forward(b3, size, alpha, beta, k,
                                      phase=0 if whole else (c0 - depth) % size
                                      ).reshape(b.shape)
    meta = np.empty((0,) * x.ndim, x.dtype)
    if whole:
        return x.map_blocks(block, dtype=x.dtype, meta=meta, token="numbanorm-lrn")
    return _da().map_overlap(block, x, depth={1: depth}, boundary=0, trim=True,
                             dtype=x.dtype, meta=meta)
