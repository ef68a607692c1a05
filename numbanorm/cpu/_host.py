"""Host side of the CPU path: canonical views, scratch buffers, chunk counts and thresholds, the
statistics' finishing steps, and the kernel launches of numbanorm.cpu.rows and
numbanorm.cpu.channels. The twin of numbanorm.cuda._host: the same functions, arguments and
return contracts, so the public ops make one call into either.

    rows_forward(x, geometry, weight, bias, eps, y=None)      -> (y, mean64, rstd64, x2)
    rows_backward(dy, saved, dx=None)                         -> (dx, dweight, dbias)
    channels_forward(x, training, eps, momentum, running_mean, running_var, weight, bias,
                     y=None)                                  -> (y, mean64, rstd64, x3)
    channels_backward(dy, saved, dx=None)                     -> (dx, dweight, dbias)
    channels_last_forward(x3, G, weight, bias, eps, y3=None)  -> (y3, mean64, rstd64)
    channels_last_backward(dy3, saved, dx3=None)              -> (dx, dweight, dbias)
    instance_running_update(mean64, rstd64, N, C, S, eps, momentum, running_mean, running_var)
    add_rows_forward(x2, r2, weight, bias, eps, centered, y2=None, h2=None, h_dtype=None)
                                                  -> (y2, h2, mean64, rstd64, (a2, b2))
    add_rows_backward(dy2, saved, dh2=None, dx2=None) -> (dx, dresidual, dweight, dbias)
    public(stat64, dtype, shape, broadcast=None)              -> a statistic in x's dtype

    data_view(x, axes)                                        -> view (numbanorm._layout.DataView)
    data_moments(view, nan_policy, want_range, want_moments=True)
                                                  -> per-slot (count, mean, m2, lo, hi, nans)
    data_affine(view, mean64, scale64, shift64, out=None)     -> y = (x - mean)*scale + shift
    data_norms(view, p)                                       -> per-slot Lp norms
    data_backward(op, x, axes, dy, stats, params)             -> dx of a data function

The statistics-mixing ops (numbanorm.adaptive) take their per-(n, c) statistics from
data_moments and write y by data_affine; their backward is two passes over (R, L) rows:

    slot_sums(x2, dy2, mean64)                        -> per-row (sum(dy), sum(dy*(x - mean)))
    slot_dx(x2, dy2, mean64, p64, q64, o64, dx2=None) -> dx = dy*p + (x - mean)*q + o

The local response norm (functional.local_response_norm; numbanorm.cpu.window) slides a
window along the channels of a C-contiguous (N, C, S) array:

    window_forward(x3, size, alpha, beta, k, y3=None, phase=0)  -> y3
    window_backward(dy3, x3, size, alpha, beta, k, dx3=None)    -> dx3

CPU only (numbanorm._sparse, for scipy.sparse CSR/CSC input; numbanorm.cpu.sparse):

    sparse_moments(c, per_major, omit, want_moments, want_range, check)
                                        -> ((count, mean, m2, lo, hi, nans) per slot, bad, disorder)
    sparse_power_sums(c, per_major, p, check)   -> ((per-slot sum |x|^p, max |x|), bad, disorder)
    sparse_normalize(c, p, eps, keep_zero, check, out_indices, out_data)
                                                             -> (per-slot norms, bad, disorder)
    sparse_scale(c, per_major, scale64, out_indices, out_data) -> (bad, infinities)

The data functions (numbanorm.scaling, numbanorm.stats) reduce x over any axes: the
statistics are float64 per slot, as NumPy arrays on both the CPU and the GPU (the GPU's come
to the host: they are small), lazy Dask arrays of x's shape without the reduced axes on Dask
(numbanorm.dask._host); view.stats(v) and view.keep(v) give them x's shape without the
reduced axes, or with them as 1, on every backend. out is validated on this backend's side.

x, dy, weight, bias and the running buffers arrive validated, on this backend's side (NumPy).
16-bit arrays (float16, bfloat16) reach the kernels as the integer views of
numbanorm._dtypes.kernel_view, and weight and bias in float32, the dtype the kernels compute
16-bit data in (numbanorm.cpu._half); outputs and gradients keep their dtypes (y and dx x's,
dweight and dbias the parameters').
geometry is ("rows", R, L, G, S, C, centered) (see numbanorm.cpu.rows), ("channels",
training) or ("last", G). The channels-last functions (group_norm, instance_norm on
(N, *spatial, C) memory; numbanorm.cpu.channels_last) take x as its C-contiguous (N, S, C)
view and give per-(image, group) statistics (N, G); batch_norm on that memory is
channels_forward on the (N*S, C) view. y and dx are where the result goes: a C-contiguous
array of x's shape and dtype
(out=, dx_out=; y may be x itself in the plain functions), or None for a fresh one. The float64
statistics mean64, rstd64 are per row (rows) or per channel (channels); x2 and x3 are the
C-contiguous (R, L) and (N, C, S) views the kernels read (a copy only when x is not
C-contiguous), which the saved record keeps for the backward pass. Gradients come back in x's
dtype and the parameters' shapes (None where the parameter is absent).

The numbers that steer the kernels (SERIAL_MAX_ELEMENTS, SLAB_MIN, COLUMN_*, ...) come from
numbanorm._config and are read here, where the kernels are chosen.
"""
import math
import threading

import numba
import numpy as np

from .._chan import lp_norms, rescaled_norms
from .._dtypes import compute, kernel_view as _kv
from .._layout import DataView, layout
from .._config import (BLOCK, CHANNELS_LAST_BLOCK_ROWS, CHANNELS_LAST_SPLIT_ITEMS,
                       CHANNELS_LAST_SPLIT_MIN_ROWS, COLUMN_BLOCK_BYTES,
                       COLUMN_BLOCK_MAX_ROWS, COLUMN_MIN_ROWS,
                       COLUMN_PARTIAL_MIN_ELEMENTS, COLUMN_SHIFT_MIN_ROWS, COLUMN_STRIP_BYTES,
                       COLUMN_SUMS_ROWS, DATA_PARTIAL_MIN_ELEMENTS, FUSED_COLUMNS_MAX_ELEMENTS,
                       MAX_PARTIALS,
                       PARTIAL_MIN_ELEMENTS, ROW_PAIR_MIN_BYTES, SERIAL_MAX_ELEMENTS, SLAB_MIN,
                       SLAB_MIN_BACKWARD, SLAB_MIN_WIDE, SPARSE_CHUNK_MIN_NNZ,
                       SPARSE_MAX_CHUNKS, SPARSE_NNZ_PER_POSITION, SPARSE_SCALE_CHUNK,
                       WINDOW_TILE_BYTES, WINDOW_TILE_MIN)
from . import channels, channels_last, rows, sparse, window

_UNIT_PARAMS = {}
_workspace = threading.local()


def _serial(size):
    """Whether a kernel over `size` elements runs its serial twin rather than its parallel
    driver: small inputs, which cannot pay for a parallel region (~1.5 us). By size only, never
    by the thread count: one thread runs the parallel kernels too, so that results are the same
    bits for any thread count (a serial twin loaded from Numba's cache can round differently in
    the last bits from the parallel kernel compiled in the process, and the other way round).
    Not by the load of the machine either: serial twins for inputs up to 4M values while other
    runnable threads filled both cores (read from /proc/loadavg) doubled the busy median of
    every parallel-sized case of scripts/under_load.py (e.g. group_norm (8, 256, 32, 32)
    612-618 us against 319-323 us for the parallel kernels under the same load, quiet 320-334
    us), in exchange for a p90 below the parallel kernels' 4.3-7.9 ms there only."""
    return size <= SERIAL_MAX_ELEMENTS


def _twins(module, size):
    """module (rows or channels), or its serial twins (module.SERIAL) where _serial(size)."""
    return module.SERIAL if _serial(size) else module


def public(stat64, dtype, shape, broadcast=None):
    """A float64 statistic in the dtype x computes in (x's, float32 for 16-bit x) and its
    shape; broadcast (read-only) to `broadcast` when given (the channels' (C,) statistics,
    shown as (C,) or instance_norm's (N, C))."""
    a = stat64.astype(compute(dtype)).reshape(shape)
    return a if broadcast is None else np.broadcast_to(a, broadcast)


# ---------------------------------------------------------------------------------------------
# rows geometry: layer_norm, rms_norm, group_norm, instance_norm (input statistics)

def _rows2d(a, R, L):
    """a as a C-contiguous (R, L) array: a itself when it is one already (a view costs 0.14 us,
    a twentieth of a tiny call), else a reshaped view, or copy, of it."""
    if a.shape == (R, L) and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a).reshape(R, L)


def rows_forward(x, geometry, weight, bias, eps, y=None):
    """(y, mean64, rstd64, x2): every row of x viewed as (R, L) normalised (numbanorm.cpu.rows);
    serial kernel for small inputs, rows in pairs when long."""
    _, R, L, G, S, C, centered = geometry
    x2 = _rows2d(x, R, L)
    if y is None:
        y = np.empty(x.shape, x.dtype)
    y2 = y if y.shape == (R, L) else y.reshape(R, L)
    mean64 = np.empty(R)
    rstd64 = np.empty(R)
    if R:
        # (the common case, 1-d parameters of 32 or 64 bits, without a call: see _param)
        w = weight if weight is not None and weight.ndim == 1 and weight.itemsize > 2 else \
            _param(weight, C, x.dtype, 1)
        b = bias if bias is not None and bias.ndim == 1 and bias.itemsize > 2 else \
            _param(bias, C, x.dtype, 0)
        xk, yk = (_kv(x2), _kv(y2)) if x.itemsize == 2 else (x2, y2)
        if _serial(x.size):
            marked = rows.forward_serial(xk, G, S, w, b, eps, centered, yk, mean64, rstd64)
        else:
            marked = np.zeros(1, np.uint8)
            # (16-bit rows count as float32 here: their weight and bias are float32, and it is
            # their loads the pairs halve; (8, 512, 4096) in pairs: forward 2.07x -> 2.19x and
            # backward 1.68x -> 1.94x float32's speed in float16, 1.95x -> 1.97x and 1.50x ->
            # 1.73x in bfloat16, /tmp timing of 9 interleaved rounds)
            if G == 1 and S == 1 and L * max(x.itemsize, 4) >= ROW_PAIR_MIN_BYTES:
                rows.forward_pairs(xk, w, b, eps, centered, yk, mean64, rstd64, marked)
            else:
                rows.forward(xk, G, S, w, b, eps, centered, yk, mean64, rstd64, marked)
            marked = marked[0]
        if marked:  # rows that need the rare paths (see cpu._moments.moments)
            rows.forward_redo(xk, _marked(rstd64), G, S, w, b, eps, centered, yk, mean64,
                              rstd64)
    return y, mean64, rstd64, x2


def _marked(rstd64):
    """The rows a common kernel marked for its redo kernel (rstd 0, which no computed row has:
    see cpu.rows._forward_row)."""
    return np.flatnonzero(rstd64 == 0.0)


def rows_backward(dy, saved, dx=None):
    """(dx, dweight, dbias) of a rows forward: dx per row, dweight/dbias from per-chunk partial
    rows merged in float64 (see numbanorm.cpu.rows for the two forms of partials)."""
    _, R, L, G, S, C, centered = saved._geometry
    x2 = saved._x
    dy2 = _rows2d(dy, R, L)
    weight = saved._weight
    want_params = weight is not None or saved._bias_shape is not None
    nchunks = _nchunks(R, L)
    serial = _serial(R * L)
    pairs = not serial and G == 1 and S == 1 and L * max(x2.itemsize, 4) >= ROW_PAIR_MIN_BYTES
    # x-dtype partial rows, filled in the rows' first read, chunks of at most BLOCK rows (see
    # cpu.rows). Against float64 partials filled four rows at a time, float32, dx_out=, medians
    # of per-round ratios in three runs of 30 rounds: (16384, 128) 0.97-1.06x, (4096, 768)
    # 0.96-1.28x, (1024, 1024) 1.07-1.38x, (256, 2048) 1.01-1.35x, (2048, 256) 1.11-1.18x,
    # (64, 1024) 1.00-1.17x; pairs (8, 512, 4096) 1.14-1.20x. On float64 single rows an earlier
    # fused form (chunk buffers flushed to the float64 rows every BLOCK rows) took 1.2x as long
    # on (4096, 768), so those keep float64 partials; so does the serial kernel (one compiled
    # form fewer).
    x_partials = pairs or (not serial and S == 1 and x2.itemsize < 8)
    shape = (max(nchunks, -(-R // BLOCK)) if x_partials else nchunks, C if want_params else 0)
    part_dtype = compute(x2.dtype) if x_partials else np.float64
    dw_part = _scratch("dweight", shape, part_dtype)
    db_part = _scratch("dbias", shape, part_dtype)
    if dx is None:
        dx = np.empty(dy.shape, dy.dtype)
    if R:
        w = weight if weight is not None and weight.ndim == 1 and weight.itemsize > 2 else \
            _param(weight, C, x2.dtype, 1)
        dx2 = dx if dx.shape == (R, L) else dx.reshape(R, L)
        mean, rstd = saved._mean64, saved._rstd64
        half = x2.itemsize == 2
        tail = (w, centered, want_params, _kv(dx2) if half else dx2, dw_part, db_part)
        dyk, xk = (_kv(dy2), _kv(x2)) if half else (dy2, x2)
        if serial:
            rows.backward_serial(dyk, xk, mean, rstd, G, S, *tail)
        elif pairs:
            rows.backward_pairs(dyk, xk, mean, rstd, *tail)
        else:
            rows.backward(dyk, xk, mean, rstd, G, S, *tail)
    dweight = dbias = None
    if weight is not None:
        dweight = _merged(dw_part, saved._param_dtype, weight.shape)
    if saved._bias_shape is not None:
        dbias = _merged(db_part, saved._param_dtype, saved._bias_shape)
    return dx, dweight, dbias


def add_rows_forward(x2, r2, weight, bias, eps, centered, y2=None, h2=None, h_dtype=None):
    """(y2, h2, mean64, rstd64, (a2, b2)) of the fused residual add + layer_norm (centered) or
    rms_norm on C-contiguous (R, L) rows: h = x + residual stored in h_dtype (default x's),
    y = norm of the sum taken before h's rounding (numbanorm.cpu.rows.add_forward). y2 and h2
    may be x2 and r2 themselves (same shapes and dtypes). (a2, b2): what the backward reads
    for the sum, (h2, None) where h holds it exactly (h in the dtype x computes in), else
    (x2, r2), added again."""
    R, L = x2.shape
    if y2 is None:
        y2 = np.empty(x2.shape, x2.dtype)
    if h2 is None:
        h2 = np.empty(x2.shape, h_dtype or x2.dtype)
    mean64 = np.empty(R)
    rstd64 = np.empty(R)
    if R:
        dt = x2.dtype
        per = max(1, min(R, -(-SERIAL_MAX_ELEMENTS // max(L, 1)) // 8))
        args = (_kv(x2), _kv(r2), _param(weight, L, dt, 1), _param(bias, L, dt, 0), eps,
                centered)
        marked = np.zeros(1, np.uint8)
        _twins(rows, x2.size).add_forward(*args, per, _kv(y2), _kv(h2), mean64, rstd64, marked)
        if marked[0]:
            xk, rk, *params = args
            rows.add_forward_redo(xk, rk, _marked(rstd64), *params, _kv(y2), _kv(h2), mean64,
                                  rstd64)
    exact = np.dtype(h2.dtype) == compute(x2.dtype)
    return y2, h2, mean64, rstd64, ((h2, None) if exact else (x2, r2))


def add_rows_backward(dy2, saved, dh2=None, dx2=None):
    """(dx, dresidual, dweight, dbias) of an add_rows_forward (saved geometry ("add", R, L,
    residual or None, the residual's, x's and h's dtypes, centered): saved._x is h where h
    holds the sum exactly, else x, and the residual is kept to add again). dx = d norm/dh + dh
    in x's dtype (into dx2 or a fresh array); dresidual the same values in the residual's
    dtype: dx itself where the dtypes agree (as flash-attn returns it)."""
    _, R, L, r2, res_dtype, _, _, centered = saved._geometry
    x2 = saved._x
    weight = saved._weight
    want_params = weight is not None or saved._bias_shape is not None
    out_dtype = dy2.dtype
    if dx2 is None:
        dx2 = np.empty(x2.shape, out_dtype)
    dres = None if res_dtype == out_dtype else np.empty(x2.shape, res_dtype)
    nchunks = max(_nchunks(R, L), -(-R // BLOCK))
    part_dtype = compute(out_dtype)
    dw_part = _scratch("add_dweight", (nchunks, L if want_params else 0), part_dtype)
    db_part = _scratch("add_dbias", (nchunks, L if want_params else 0), part_dtype)
    if R:
        backward = rows.add_backward_serial if _serial(R * L) else rows.add_backward
        backward(_kv(dy2), _kv(x2), None if r2 is None else _kv(r2),
                 None if dh2 is None else _kv(dh2), saved._mean64, saved._rstd64,
                 _param(weight, L, out_dtype, 1), centered, want_params, _kv(dx2),
                 None if dres is None else _kv(dres), dw_part, db_part)
    dweight = None if weight is None else _merged(dw_part, saved._param_dtype, weight.shape)
    dbias = None if saved._bias_shape is None else _merged(db_part, saved._param_dtype,
                                                           saved._bias_shape)
    return dx2, dx2 if dres is None else dres, dweight, dbias


def instance_running_update(mean64, rstd64, N, C, S, eps, momentum, running_mean, running_var):
    """PyTorch's rule for instance_norm's running buffers: the mean over the batch of each
    instance's mean and unbiased variance (from rstd: var = 1/rstd^2 - eps)."""
    var = 1.0 / rstd64.reshape(N, C) ** 2 - eps
    _update_running(running_mean, running_var, mean64.reshape(N, C).mean(axis=0),
                    (var * (S / (S - 1))).mean(axis=0), momentum)


# ---------------------------------------------------------------------------------------------
# channels geometry: batch_norm (and instance_norm with running statistics)

def channels_forward(x, training, eps, momentum, running_mean, running_var, weight, bias,
                     y=None):
    """(y, mean64, rstd64, x3) for (N, C, *) x normalised per channel: with the batch's
    statistics when training (running buffers, when given, updated in place: running =
    (1 - momentum)*running + momentum*batch, the unbiased variance into running_var; an empty
    batch has NaN statistics and leaves them alone), else with the running buffers. Small
    inputs take the fused serial kernel (statistics and y in one call)."""
    N, C = x.shape[:2]
    S = _prod(x.shape[2:])
    # One contiguous view for every kernel and the saved record (a copy only when x is not
    # C-contiguous).
    x3 = np.ascontiguousarray(x).reshape(N, C, S)
    if y is None:
        y = np.empty(x.shape, x.dtype)
    done = False
    if training:
        if N * S == 0:
            mean64 = np.full(C, np.nan)
            rstd64 = np.full(C, np.nan)
        else:
            stats = _small_batch_norm(x3, weight, bias, eps, y) if _fused(x3, SLAB_MIN) else None
            done = stats is not None
            mean64, rstd64, var64 = stats if done else _channel_stats(x3, eps)
            if running_mean is not None:
                with np.errstate(over="ignore"):  # beyond float range: inf
                    var_unbiased = var64 * (N * S / (N * S - 1))
                _update_running(running_mean, running_var, mean64, var_unbiased, momentum)
    else:
        mean64 = running_mean.astype(np.float64)
        rstd64 = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    if not done:
        _channel_affine(x3, mean64, rstd64, weight, bias, y.reshape(N, C, S))
    return y, mean64, rstd64, x3


def _small_batch_norm(x3, weight, bias, eps, y):
    """(mean, rstd, var) by the fused serial kernel on the contiguous (N, C, S) x3, y written
    (float64 statistics as _channel_stats gives them), or None where it declines (non-finite
    statistics: the general path rescales or propagates)."""
    N, C, _ = x3.shape
    x2 = x3.reshape(N, -1)
    mean64 = np.empty(C)
    rstd64 = np.empty(C)
    var64 = np.empty(C)
    strip, rows_per_block = _column_blocks(x2.shape[1], x3.itemsize)
    y2 = y.reshape(N, -1)
    if x3.itemsize == 2:
        x2, y2 = _kv(x2), _kv(y2)
    if channels.small_forward(x2, C, _param(weight, C, x3.dtype, 1),
                              _param(bias, C, x3.dtype, 0), eps, rows_per_block,
                              COLUMN_SHIFT_MIN_ROWS, strip, y2, mean64, rstd64, var64):
        return mean64, rstd64, var64
    return None


def channels_backward(dy, saved, dx=None):
    """(dx, dweight, dbias) of a channels forward, in training or eval mode (see
    numbanorm.cpu.channels for the formulas)."""
    _, training = saved._geometry
    x3 = saved._x
    N, C, S = x3.shape
    dy3 = np.ascontiguousarray(dy).reshape(N, C, S)
    half = x3.itemsize == 2
    if half:
        x3, dy3 = _kv(x3), _kv(dy3)
    mean, rstd = saved._mean64, saved._rstd64
    weight = saved._weight
    want_params = weight is not None or saved._bias_shape is not None
    w = _param(weight, C, np.float64, 1.0)
    if dx is None:
        dx = np.empty(dy.shape, dy.dtype)
    dx3 = _kv(dx.reshape(x3.shape)) if half else dx.reshape(x3.shape)
    # An empty batch: no dx to write, and dweight = sum(dy*xhat), dbias = sum(dy) are sums of
    # no terms, exactly 0 (rstd is NaN there: rstd*0 gave NaN dweight).
    sum_dy = dw = np.zeros(C)
    if x3.size and _fused(x3, SLAB_MIN_BACKWARD):
        sum_dy = np.empty(C)
        dw = np.empty(C)
        channels.small_backward(dy3.reshape(N, C * S), x3.reshape(N, C * S), C, mean, rstd, w,
                                training, COLUMN_SUMS_ROWS, dx3.reshape(N, C * S), sum_dy, dw)
    elif x3.size and _slabs(x3, SLAB_MIN_BACKWARD):
        nchunks = max(1, min(N, MAX_PARTIALS // C))
        sum_dy = np.empty(C)
        sum_dyx = np.empty(C)
        kernels = _twins(channels, x3.size)
        kernels.slab_backward(dy3.reshape(N * C, S), x3.reshape(N * C, S), N, C, mean,
                              rstd, w, training, want_params,
                              _slab_groups(x3.size, nchunks, C),
                              np.empty((nchunks, C)), np.empty((nchunks, C)),
                              dx3.reshape(N * C, S), sum_dy, sum_dyx)
        dw = rstd * sum_dyx
    elif x3.size:
        sum_dy = sum_dyx = np.zeros(C)
        if training or want_params:
            sum_dy, sum_dyx = _column_sums(dy3, x3, mean)
        mean_dy = mean_dyx = np.zeros(C)
        if training:
            mean_dy = sum_dy / (N * S)
            mean_dyx = rstd * sum_dyx / (N * S)  # mean(dy*xhat)
        _column_dx(dy3, x3, mean, rstd, w * rstd, mean_dy, mean_dyx, dx3)
        dw = rstd * sum_dyx
    dweight = _cast(dw, saved._param_dtype) if weight is not None else None
    dbias = _cast(sum_dy, saved._param_dtype) if saved._bias_shape is not None else None
    return dx, dweight, dbias


# ---------------------------------------------------------------------------------------------
# channels-last geometry: group_norm and instance_norm on (N, *spatial, C) memory
# (numbanorm.cpu.channels_last; batch_norm there is the channels geometry's (N*S, C) columns)

def channels_last_forward(x3, G, weight, bias, eps, y3=None):
    """(y3, mean64, rstd64) of group_norm with G groups (instance_norm: G = C) on the
    C-contiguous (N, S, C) x3: per-(image, group) float64 statistics (N, G), y3 into the given
    array (x3's shape and dtype, may be x3 itself: an image is read before it is written) or
    a fresh one. Images whose statistics came out with an infinite variance (float64 squares
    beyond its range) are computed again by the rows kernels on a channels-first copy, which
    rescale (see cpu._moments.moments)."""
    N, S, C = x3.shape
    if y3 is None:
        y3 = np.empty(x3.shape, x3.dtype)
    mean = np.empty((N, G))
    rstd = np.empty((N, G))
    if N and C:
        strip = _column_strip(C, x3.itemsize)
        rows_per_block = CHANNELS_LAST_BLOCK_ROWS
        w, b = _param(weight, C, x3.dtype, 1), _param(bias, C, x3.dtype, 0)
        K = _image_chunks(N, S, x3.size)
        if K > 1:  # few large images: (image, chunk) items, in three kernels
            pmean, pm2 = np.empty((N, K, C)), np.empty((N, K, C))
            channels_last.split_moments(_kv(x3), K, rows_per_block, COLUMN_SHIFT_MIN_ROWS,
                                        strip, pmean, pm2)
            mh, a, b_ = (np.empty((N, C), compute(x3.dtype)) for _ in range(3))
            channels_last.split_terms(pmean, pm2, S, G, w, b, eps, mean, rstd, mh, a, b_)
            channels_last.split_affine(_kv(x3), K, mh, a, b_, _kv(y3))
        else:
            _twins(channels_last, x3.size).forward(
                _kv(x3), G, w, b, eps, rows_per_block, COLUMN_SHIFT_MIN_ROWS, strip, _kv(y3),
                mean, rstd)
        if S and not (rstd > 0.0).all():  # inf variance (or NaN data, which stays NaN)
            x_cf = np.ascontiguousarray(x3.transpose(0, 2, 1))
            y_cf, m, r, _ = rows_forward(x_cf, ("rows", N * G, C // G * S, G, S, C, True),
                                         weight, bias, eps)
            y3[...] = y_cf.transpose(0, 2, 1)
            mean[...] = m.reshape(N, G)
            rstd[...] = r.reshape(N, G)
    return y3, mean, rstd


def _image_chunks(N, S, size):
    """Chunks of rows each of N channels-last images of S rows is cut into: 1, or, for fewer
    than CHANNELS_LAST_SPLIT_ITEMS images above the serial size, enough that the (image,
    chunk) items number CHANNELS_LAST_SPLIT_ITEMS, each of at least
    CHANNELS_LAST_SPLIT_MIN_ROWS rows. The shape decides, not the thread count."""
    if N >= CHANNELS_LAST_SPLIT_ITEMS or _serial(size):
        return 1
    return max(1, min(-(-CHANNELS_LAST_SPLIT_ITEMS // N), S // CHANNELS_LAST_SPLIT_MIN_ROWS))


def channels_last_backward(dy3, saved, dx3=None):
    """(dx, dweight, dbias) of a channels_last_forward (saved: its record, geometry
    ("last", G), x the (N, S, C) array it read): dx in x's layout, into dx3 (C-contiguous
    (N, S, C)) or a fresh array; dweight = sum_n sum(dy*xhat) and dbias = sum_n sum(dy) summed
    over the images in order, in the parameters' dtype (None where absent)."""
    x3 = saved._x
    G = saved._geometry[1]
    N, S, C = x3.shape
    if dx3 is None:
        dx3 = np.empty(x3.shape, x3.dtype)
    sdy = np.zeros((N, C))
    sdyx = np.zeros((N, C))
    if N and C and S:
        mean, rstd = saved._mean64.reshape(N, G), saved._rstd64.reshape(N, G)
        w = _param(saved._weight, C, x3.dtype, 1)
        K = _image_chunks(N, S, x3.size)
        if K > 1:  # as the forward was cut: (image, chunk) items
            psdy, psdyx = np.empty((N, K, C)), np.empty((N, K, C))
            channels_last.split_sums(_kv(dy3), _kv(x3), K, G, mean, rstd,
                                     CHANNELS_LAST_BLOCK_ROWS, psdy, psdyx)
            u, md, mx = (np.empty((N, C), compute(x3.dtype)) for _ in range(3))
            channels_last.split_grad_terms(psdy, psdyx, S, G, w, sdy, sdyx, u, md, mx)
            channels_last.split_dx(_kv(dy3), _kv(x3), K, G, mean, rstd, u, md, mx, _kv(dx3))
        else:
            _twins(channels_last, x3.size).backward(
                _kv(dy3), _kv(x3), G, mean, rstd, w, CHANNELS_LAST_BLOCK_ROWS, _kv(dx3), sdy,
                sdyx)
    dweight = dbias = None
    if saved._weight is not None:
        dweight = _cast(sdyx.sum(axis=0), saved._param_dtype)
    if saved._bias_shape is not None:
        dbias = _cast(sdy.sum(axis=0), saved._param_dtype)
    return dx3, dweight, dbias


# ---------------------------------------------------------------------------------------------
# helpers

def _prod(shape):
    return int(math.prod(shape))


def _param(p, size, dtype, fill):
    """p flattened, in the dtype x of `dtype` computes in (a 16-bit p in float32: the kernels
    compute 16-bit data in float32), or a constant array standing in for a missing weight (1)
    or bias (0). The constants are cached (the kernels only read them)."""
    if p is not None:
        p = p if p.ndim == 1 else p.reshape(size)
        return p if p.itemsize > 2 else p.astype(np.float32)
    key = (size, dtype, fill)
    unit = _UNIT_PARAMS.get(key)
    if unit is None:
        if len(_UNIT_PARAMS) > 64:
            _UNIT_PARAMS.clear()
        unit = _UNIT_PARAMS[key] = np.full(size, fill, compute(np.dtype(dtype)))
    return unit


def _nchunks(n_rows, row_size):
    """How many partials a cross-row reduction of n_rows rows of row_size elements is split
    into: a function of the shape only (so results never depend on the thread count). No rows,
    no chunks: the partials then sum to exactly 0, and no buffer row is read that no kernel
    wrote (a reused scratch row once leaked the previous call's dweight into an empty batch's)."""
    return min(n_rows, max(1, min(MAX_PARTIALS, n_rows * row_size // PARTIAL_MIN_ELEMENTS)))


def _scratch(name, shape, dtype=np.float64):
    """An array for partial results (float64 unless dtype), reused by the calling thread; not
    zeroed: each kernel that fills one zeroes its own chunk's rows first, in parallel and where
    they are then used (zeroing here cost 9-19 us a call for (32-64, 1024) buffers, a tenth of a
    (1024, 1024) batch_norm forward).

    Partial buffers are O(chunks x channels), but fresh ones cost more than the reduction that
    fills them: first-touch page faults in the parallel kernel measured 4.3 ms against 1.7 ms
    for the (4096, 1024) batch_norm statistics. One buffer per name and thread, so memory stays
    bounded and concurrent calls from several threads never share one. Never returned to users.
    """
    bufs = getattr(_workspace, "bufs", None)
    if bufs is None:
        bufs = _workspace.bufs = {}
    size = _prod(shape)
    key = (name, np.dtype(dtype))
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def _merged(part, dtype, shape):
    """The (K, C) partial sums summed over K in float64, in dtype and the parameter's shape
    (one partial, as in every tiny call: its row as it is, which is what the sum gives,
    without NumPy's reduction machinery, ~0.5 us)."""
    total = _cast(part[0] if part.shape[0] == 1 else part.sum(axis=0, dtype=np.float64), dtype)
    return total if len(shape) == 1 else total.reshape(shape)


def _cast(a, dtype):
    """a in dtype; a gradient beyond a 16-bit range is inf, as PyTorch gives it, without
    NumPy's warning (the float32/float64 casts skip the errstate, ~1 us)."""
    if dtype.itemsize != 2:
        return a.astype(dtype)
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def _channel_partials(x3, inv=None):
    """Per-channel float64 (mean, M2) of x*inv[c] (inv None: x) for a contiguous (N, C, S)
    array."""
    N, C, S = x3.shape
    kernels = _twins(channels, x3.size)
    if _slabs(x3, SLAB_MIN):
        nchunks = max(1, min(N, MAX_PARTIALS // C))
        pmean = np.empty((nchunks, C))
        pm2 = np.empty((nchunks, C))
        kernels.slab_partials(_kv(x3).reshape(N * C, S), N, C, inv,
                              _slab_groups(x3.size, nchunks, C), pmean, pm2)
        scale = S
    else:
        M = C * S
        strip, rows_per_block = _column_blocks(M, x3.itemsize)
        nchunks = max(1, min(MAX_PARTIALS, -(-N // rows_per_block),
                             N * M // COLUMN_PARTIAL_MIN_ELEMENTS))
        pmean = _scratch("mean", (nchunks, M))
        pm2 = _scratch("m2", (nchunks, M))
        kernels.column_partials(_kv(x3).reshape(N, M),
                                None if inv is None else _columns(inv, S),
                                rows_per_block, COLUMN_SHIFT_MIN_ROWS, strip, pmean,
                                pm2)
        scale = 1
    mean = np.empty(C)
    m2 = np.empty(C)
    finite = channels.merge_partials(pmean, pm2, N, scale, C, mean, m2)
    return mean, m2, finite


def _slab_groups(size, nchunks, C):
    """Runs of consecutive channels a slab reduction splits each chunk into: just enough that
    every thread gets a work item (one for the serial kernels). Longer runs are read in memory
    order; the grouping never changes a result (see cpu.channels.slab_partials)."""
    if _serial(size):
        return 1
    return max(1, min(C, -(-numba.get_num_threads() // nchunks)))


def _slabs(x3, slab_min):
    """Whether batch_norm on the (N, C, S) array x3 takes the slab layout (slab_min: SLAB_MIN
    forward, SLAB_MIN_BACKWARD backward; see also SLAB_MIN_WIDE) rather than the columns."""
    _, C, S = x3.shape
    return S >= slab_min or (S >= SLAB_MIN_WIDE and
                             _column_rows_per_block(C * S, x3.itemsize) < COLUMN_MIN_ROWS)


def _columns(v, S):
    """Per-channel values v as the per-column values of the (N, C*S) column layout: each
    repeated S times, v itself when S == 1 ((N, C) input; np.repeat took 0.1 ms a call on
    (4, 65536), three per forward)."""
    return v if S == 1 else np.repeat(v, S)


def _column_strip(M, itemsize):
    """Columns per strip of the (N, M) column kernels (see COLUMN_STRIP_BYTES)."""
    # (16-bit data: as float32, the dtype of its per-column sums, which then stay in L1; with
    # strips of twice the columns batch_norm (4096, 1024) ran its forward at 1.52x (float16)
    # and 1.44x (bfloat16) float32's speed, with these at 1.65x and 1.49x)
    return min(M, max(1, COLUMN_STRIP_BYTES // max(itemsize, 4)))


def _column_blocks(M, itemsize):
    """(strip, rows_per_block) of the column statistics of an (N, M) matrix: the block rows
    follow from the strip width, in the parallel and the fused kernels alike."""
    strip = _column_strip(M, itemsize)
    return strip, _column_rows_per_block(strip, itemsize)


def _column_rows_per_block(M, itemsize):
    """Rows of an (N, M) column reduction block (see COLUMN_BLOCK_BYTES, COLUMN_BLOCK_MAX_ROWS)."""
    return max(1, min(COLUMN_BLOCK_MAX_ROWS, COLUMN_BLOCK_BYTES // max(1, M * itemsize)))


def _channel_stats(x3, eps):
    """Per-channel float64 (mean, rstd, biased variance) of a contiguous (N, C, S) array (the
    variance inf where it exceeds float64's range). A channel whose squares overflow float64 on
    finite data is reduced again, scaled by an exact power of two (see cpu._moments.moments)."""
    N, C, S = x3.shape
    inv = None
    mean, m2, finite = _channel_partials(x3)
    if not finite:
        overflow = ~(np.isfinite(m2) & np.isfinite(mean))
        biggest = _twins(channels, x3.size).channel_absmax(_kv(x3))
        rescale = overflow & np.isfinite(biggest) & (biggest > 0)
        if rescale.any():
            inv = np.ones(C)
            inv[rescale] = np.ldexp(1.0, -np.frexp(biggest[rescale])[1])
            mean, m2, _ = _channel_partials(x3, inv)
    rstd = np.empty(C)
    var = np.empty(C)
    channels.finish_stats(mean, m2, N * S, inv, eps, rstd, var)
    return mean, rstd, var


def _channel_affine(x3, mean, rstd, weight, bias, y3):
    """y = (x - mean[c])*rstd[c]*weight[c] + bias[c] (float64 mean, rstd; weight, bias None
    or in x's dtype), computed as (x - mh)*a + (bias - (mean - mh)*a) with mh the mean rounded
    to x's dtype and a = rstd*weight: the kernels then run wholly in x's dtype (for float32,
    twice the SIMD width and no conversions), x - mh is exact where it matters (x near mh), and
    the part of the mean that mh drops is added back through b. The terms come from
    one kernel (affine_terms): in NumPy they were nine calls, ~20 us of a 0.26 ms (512, 2048)
    float32 forward."""
    N, C, S = x3.shape
    dt = compute(x3.dtype)
    mh = np.empty(C, dt)
    a = np.empty(C, dt)
    b = np.empty(C, dt)
    channels.affine_terms(mean, rstd, 1.0 if weight is None else _param(weight, C, dt, 1),
                          0.0 if bias is None else _param(bias, C, dt, 0), mh, a, b)
    if not x3.size:
        return
    x3, y3 = _kv(x3), _kv(y3)
    kernels = _twins(channels, x3.size)
    if _slabs(x3, SLAB_MIN):
        kernels.slab_affine(x3.reshape(N * C, S), C, mh, a, b, y3.reshape(N * C, S))
    else:
        kernels.column_affine(x3.reshape(N, C * S), _columns(mh, S), _columns(a, S),
                              _columns(b, S), y3.reshape(N, C * S))


def _column_sums(dy3, x3, mean):
    """Per-channel sum(dy) and sum(dy*(x - mean)) in float64 of the column layout: the kernel
    sums dy*(x - mh) with mh the mean rounded to x's dtype, and (mean - mh)*sum(dy) is taken
    off where the partials are totalled."""
    N, C, S = x3.shape
    M = C * S
    # Chunks as in the statistics (_channel_partials): at least COLUMN_SUMS_ROWS rows and
    # COLUMN_PARTIAL_MIN_ELEMENTS values each, and no more than make MAX_PARTIALS work items
    # with the strips (rows wider than a strip get their parallelism from the strips instead).
    # The (K, M) float64 partials are written and totalled again: (512, 2048) float32 split 64
    # ways wrote 2 MiB of them for 8 MiB of input.
    strip = _column_strip(M, x3.itemsize)
    strips = -(-M // strip)
    nchunks = max(1, min(MAX_PARTIALS, N // COLUMN_SUMS_ROWS, N * M // COLUMN_PARTIAL_MIN_ELEMENTS,
                         -(-MAX_PARTIALS // strips)))
    sdy = _scratch("sum_dy", (nchunks, M))
    sdyx = _scratch("sum_dyx", (nchunks, M))
    mh = mean.astype(compute(x3.dtype))
    kernels = _twins(channels, x3.size)
    kernels.column_sums(dy3.reshape(N, M), x3.reshape(N, M), _columns(mh, S),
                        COLUMN_SUMS_ROWS, strip, sdy, sdyx)
    sum_dy = np.empty(C)
    sum_dyx = np.empty(C)
    channels.total_sums(sdy, sdyx, mean, mh, sum_dy, sum_dyx)
    return sum_dy, sum_dyx


def _column_dx(dy3, x3, mean, rstd, k1, mean_dy, mean_dyx, dx3):
    """dx = k1*((dy - mean_dy) - xhat*mean_dyx) per channel of the column layout (float64
    parameters; the kernel rounds them to x's dtype and runs in it)."""
    N, C, S = x3.shape
    kernels = _twins(channels, x3.size)
    kernels.column_dx(dy3.reshape(N, C * S), x3.reshape(N, C * S), _columns(mean, S),
                      _columns(rstd, S), _columns(k1, S), _columns(mean_dy, S),
                      _columns(mean_dyx, S), dx3.reshape(N, C * S))


def _fused(x3, slab_min):
    """Whether batch_norm on the (N, C, S) array x3 takes the fused serial column kernels
    (slab_min: SLAB_MIN forward, SLAB_MIN_BACKWARD backward): small inputs, and inputs up to
    FUSED_COLUMNS_MAX_ELEMENTS that would take the columns anyway. Wide rows of short slabs
    (see _slabs) take the parallel slabs instead: the fused kernels reduce them in blocks of a
    row or two on one thread; (2, 8192, 4, 4) float32 took 0.15x (forward) and 0.20x
    (backward) the time in the slabs. Wide (N, C) input keeps the fused kernels: the parallel
    columns measured 1.5-2.2x their time on (8, 32768) and (16, 16384)."""
    return x3.size <= SERIAL_MAX_ELEMENTS or (not _slabs(x3, slab_min) and
                                              x3.size <= FUSED_COLUMNS_MAX_ELEMENTS)


def _update_running(running_mean, running_var, mean, var_unbiased, momentum):
    """In place, both or neither: the new values are computed before either buffer is written."""
    new_mean = (1.0 - momentum) * running_mean + momentum * mean
    new_var = (1.0 - momentum) * running_var + momentum * var_unbiased
    running_mean[...] = new_mean
    running_var[...] = new_var



# ---------------------------------------------------------------------------------------------
# data normalization (numbanorm.scaling, numbanorm.moments): a reduction over any axes, read
# through a numbanorm._layout.Layout as rows, columns or slabs

def data_view(x, axes):
    """The DataView of NumPy x for a reduction over the sorted tuple of axes (x itself, a view,
    or its one copy when the axes interleave: numbanorm._layout)."""
    lay = layout(x, axes)
    return DataView(x, axes, lay, lay.read(x))


def data_moments(view, nan_policy, want_range, want_moments=True):
    """Per-slot float64 (count, mean, m2, lo, hi, nans) of view.x (slots in the layout's
    order; rows: R, columns: A*M, slabs: C): with want_moments, count, mean and M2 of the
    values that enter the statistics (nan_policy 'omit': the non-NaN ones), and with want_range
    min, max and the NaN count (None where not asked for): min and max of the non-NaN values,
    NaN where a NaN entered with 'propagate' (Moments' rule). nan_policy 'raise': a
    ValueError before any kernel runs when x holds a NaN."""
    if nan_policy == "raise" and np.isnan(view.x).any():
        raise ValueError("The input contains nan values (nan_policy='raise'; 'omit' leaves "
                         "NaN out, 'propagate' keeps it in the results)")
    omit = True if nan_policy == "omit" else None
    want = [want_moments] * 3 + [want_range] * 3
    lay = view.lay
    xk = _kv(view.xk)
    if lay.kind == "columns":
        A, N, M = lay.dims
        res = [np.empty(A * M) if w else None for w in want]
        for a in range(A):
            _data_columns(xk[a], omit, want,
                          [None if r is None else r[a * M:(a + 1) * M] for r in res])
        return _propagated(res, omit)
    if lay.kind == "rows":
        R, L = lay.dims
        x2 = xk
    else:  # slabs: every slab a row, merged over the batch per channel
        N, C, S = lay.dims
        R, L = N * C, S
        x2 = xk.reshape(R, L)
    res = [np.empty(R) if w else None for w in want]
    _twins(rows, x2.size).data_moments(x2, omit, *res)
    if lay.kind == "slabs":
        merged = [np.empty(C) if r is not None else None for r in res]
        channels.merge_data_partials(*[None if r is None else r.reshape(N, C) for r in res],
                                     *merged)
        res = merged
    return _propagated(res, omit)


def _propagated(res, omit):
    """(count, mean, m2, lo, hi, nans) with lo and hi NaN where a NaN entered (not omit)."""
    count, mean, m2, lo, hi, nans = res
    if lo is not None and not omit:
        lo = np.where(nans > 0, np.nan, lo)
        hi = np.where(nans > 0, np.nan, hi)
    return count, mean, m2, lo, hi, nans


def _data_columns(x2, omit, want, res):
    """data_moments of the (N, M) matrix x2 into the (M,) arrays res (None where not wanted):
    chunks of rows as batch_norm's column statistics cut them, partials merged in chunk
    order."""
    N, M = x2.shape
    strip, rows_per_block, nchunks = _data_column_blocks(N, M, x2.itemsize)
    parts = [_scratch(f"data{i}", (nchunks, M)) if w else None for i, w in enumerate(want)]
    kernels = _twins(channels, x2.size)
    if want[0]:
        kernels.data_column_moments(x2, omit, rows_per_block, strip, *parts)
    else:
        kernels.data_column_range(x2, strip, *parts[3:])
    channels.merge_data_partials(*parts, *res)


def _data_column_blocks(N, M, itemsize):
    """(strip, rows_per_block, nchunks) of the data-normalization column kernels (see
    DATA_PARTIAL_MIN_ELEMENTS): strips as batch_norm's, blocks of COLUMN_BLOCK_BYTES (no
    columns: a strip of 1, over nothing)."""
    strip = max(1, _column_strip(M, itemsize))
    rows_per_block = max(1, COLUMN_BLOCK_BYTES // (strip * itemsize))
    nchunks = max(1, min(MAX_PARTIALS, -(-N // rows_per_block) * 4,
                         N * M // DATA_PARTIAL_MIN_ELEMENTS))
    return strip, rows_per_block, nchunks


def data_affine(view, mean64, scale64, shift64, out=None):
    """y = (x - mean)*scale + shift per slot of view.x (float64 per-slot arrays in the
    layout's order; shift may be a scalar), in x's dtype, into out (x's shape and dtype, may
    be x itself) or a fresh array: written by the kernels where out's memory is laid out like
    the kernel array, else filled by one copy."""
    lay = view.lay
    yk = None if out is None else lay.view(out)
    y = out
    if yk is None:
        yk, y = lay.empty(view.x.dtype)
    _data_affine(view.xk, lay, mean64, scale64, shift64, yk)
    if out is not None and y is not out:
        np.copyto(out, y)
        return out
    return y


def _data_affine(xk, lay, mean64, scale64, shift64, yk):
    """yk = (xk - mean)*scale + shift per slot, in x's dtype with the mean split as
    batch_norm's affine splits it (see channels.affine_terms): exact for x near the mean, so
    float32 data far from 0 keeps its precision. yk may be xk (in place)."""
    slots = mean64.size
    dt = compute(xk.dtype)
    result = yk
    xk, yk = _kv(xk), _kv(yk)
    mh = np.empty(slots, dt)
    a = np.empty(slots, dt)
    b = np.empty(slots, dt)
    channels.affine_terms(mean64, scale64, 1.0, shift64, mh, a, b)
    kernels = _twins(channels, xk.size)
    if lay.kind == "columns":
        A, N, M = lay.dims
        for k in range(A):
            s = slice(k * M, (k + 1) * M)
            kernels.column_affine(xk[k], mh[s], a[s], b[s], yk[k])
    elif lay.kind == "rows":
        if xk.size:
            kernels.slab_affine(xk, max(1, slots), mh, a, b, yk)
    else:
        N, C, S = lay.dims
        if xk.size:
            kernels.slab_affine(xk.reshape(N * C, S), C, mh, a, b, yk.reshape(N * C, S))
    return result


def data_norms(view, p):
    """Per-slot float64 Lp norms of view.x (slots as data_moments'). Slots whose sum of |x|^p
    overflowed, or fell to where terms may have underflowed, on finite nonzero data are summed
    again scaled by their max |x| (rare: float64 |x| beyond ~1e154 or below ~1e-146 for
    p = 2)."""
    xk, lay = view.xk, view.lay
    return lp_norms(lambda q: _power_sums(xk, lay, q), p, lambda redo, big: rescaled_norms(
        lambda slot: _slot_values(xk, lay, slot), p, redo, big))


def _slot_values(xk, lay, slot):
    """The values of one slot of the kernel array, flat (the rare rescaling path)."""
    if lay.kind == "rows":
        return xk[slot]
    if lay.kind == "columns":
        A, N, M = lay.dims
        return xk[slot // M, :, slot % M]
    return xk[:, slot, :].ravel()


def _power_sums(xk, lay, p):
    """Per-slot float64 sum(|x|^p) (p = inf: max |x|) of the kernel array xk."""
    xk = _kv(xk)
    if lay.kind == "columns":
        A, N, M = lay.dims
        out = np.empty(A * M)
        strip, rows_per_block, nchunks = _data_column_blocks(N, M, xk.itemsize)
        part = _scratch("norms", (nchunks, M))
        kernels = _twins(channels, xk.size)
        for a in range(A):
            kernels.data_column_norms(xk[a], p, rows_per_block, strip, part)
            channels.merge_norm_partials(part, p, out[a * M:(a + 1) * M])
        return out
    if lay.kind == "rows":
        x2 = xk
    else:
        N, C, S = lay.dims
        x2 = xk.reshape(N * C, S)
    out = np.empty(x2.shape[0])
    _twins(rows, x2.size).data_norms(x2, p, out)
    if lay.kind == "slabs":
        merged = np.empty(C)
        channels.merge_norm_partials(out.reshape(N, C), p, merged)
        out = merged
    return out


def count_nonfinite(x, with_nan):
    """How many values of the array x are infinite (or NaN, with_nan): one parallel read."""
    x2 = x.reshape(x.shape[0], -1) if x.ndim > 1 and x.flags.c_contiguous else \
        np.ascontiguousarray(x).reshape(1, -1)
    out = np.empty(x2.shape[0], np.int64)
    x2 = _kv(x2)
    _twins(rows, x2.size).count_nonfinite(x2, bool(with_nan), out)
    return int(out.sum())


# ---------------------------------------------------------------------------------------------
# compressed sparse matrices (numbanorm._sparse): c has indptr, indices, data (float32 or
# float64), n_major and n_minor; per_major: statistics per major slot (CSR's rows), else per
# minor position (CSR's columns). Structure errors and disorder come back as counts (see
# numbanorm.cpu.sparse); the caller refuses or canonicalises and calls again.

def _sparse_bounds(indptr, nnz, per, kmax):
    """The slot bounds of K chunks of about nnz/K stored values each (at least `per`, at most
    kmax chunks), from indptr alone: never from the thread count."""
    K = max(1, min(kmax, nnz // max(per, 1)))
    bounds = np.searchsorted(indptr, (np.arange(K + 1) * nnz) // K).astype(np.intp)
    bounds[0], bounds[-1] = 0, indptr.size - 1
    return np.maximum.accumulate(bounds)


def _major_bounds(c):
    """Chunks of the per-slot kernels: balanced by nnz, SPARSE_CHUNK_MIN_NNZ values or more."""
    return _sparse_bounds(c.indptr, c.data.size, SPARSE_CHUNK_MIN_NNZ, MAX_PARTIALS)


def _minor_bounds(c):
    """Chunks of the per-position kernels, each with its own partial row (see
    SPARSE_MAX_CHUNKS)."""
    return _sparse_bounds(c.indptr, c.data.size,
                          max(SPARSE_CHUNK_MIN_NNZ, SPARSE_NNZ_PER_POSITION * c.n_minor),
                          SPARSE_MAX_CHUNKS)


def _status(bounds):
    return np.zeros((bounds.size - 1, 2), np.int64)


def sparse_moments(c, per_major, omit, want_moments, want_range, check):
    """((count, mean, m2, lo, hi, nans), bad, disorder): per-slot float64 statistics of the
    stored values and the implicit zeros (numbanorm.cpu.sparse), NaN left out of the moments
    where omit. Per position, mean and m2 are meaningful only with want_moments, lo and hi only
    with want_range (the records are narrower without them); per slot, all are."""
    n = c.n_major if per_major else c.n_minor
    res = [np.empty(n) for _ in range(6)]
    if per_major:
        bounds = _major_bounds(c)
        status = _status(bounds)
        sparse.major_moments(c.indptr, c.indices, c.data, c.n_minor, omit, check, bounds, status,
                             *res)
    else:
        bounds = _minor_bounds(c)
        status = _status(bounds)
        # (fresh, not _scratch: partial rows as wide as the matrix would stay held per thread)
        width = 2 + 2 * want_moments + 2 * want_range
        part = np.empty((bounds.size - 1, c.n_minor * width))
        if not check:  # the chunks' value ranges must nest in the data (slots are not read)
            ends = c.indptr[bounds]
            if ends[0] < 0 or ends[-1] > c.data.size or (np.diff(ends) < 0).any():
                return res, 1, 0
        sparse.minor_moments(c.indptr, c.indices, c.data, c.n_minor, omit, want_moments,
                             want_range, check, bounds, status, part)
        sparse.merge_minor(part, c.n_minor, float(c.n_major), omit, want_moments, want_range,
                           *res)
    bad, disorder = status.sum(axis=0)
    return res, bad, disorder


def merge_slots(res):
    """Per-slot (count, mean, m2, lo, hi, nans) merged in slot order into one slot."""
    out = [np.empty(1) for _ in range(6)]
    channels.merge_data_partials(*[r.reshape(-1, 1) for r in res], *out)
    return out


def sparse_power_sums(c, per_major, p, check):
    """((per-slot float64 sum(|x|^p) of the stored values (p = inf: max |x|), per-slot max |x|
    or None), bad, disorder): the max comes with the per-position sums (see
    cpu.sparse.minor_power_sums), not with the per-slot ones."""
    big = None
    if per_major:
        bounds = _major_bounds(c)
        status = _status(bounds)
        out = np.empty(c.n_major)
        sparse.major_power_sums(c.indptr, c.indices, c.data, c.n_minor, p, check, bounds, status,
                                out)
    else:
        bounds = _minor_bounds(c)
        status = _status(bounds)
        part = np.empty((bounds.size - 1, c.n_minor, 2))
        sparse.minor_power_sums(c.indptr, c.indices, c.data, p, check, bounds, status, part)
        out = np.empty(c.n_minor)
        big = np.empty(c.n_minor)
        sparse.merge_minor_norms(part, p, out, big)
    bad, disorder = status.sum(axis=0)
    return (out, big), bad, disorder


def sparse_normalize(c, p, eps, keep_zero, check, out_indices, out_data):
    """(per-slot norms, bad, disorder): every major slot scaled by 1/max(||slot||_p, eps) (1
    where keep_zero and the norm is 0) into out_data, in one read (cpu.sparse.normalize_major);
    out_indices a copy of indices where not None."""
    bounds = _major_bounds(c)
    status = _status(bounds)
    norms = np.empty(c.n_major)
    sparse.normalize_major(c.indptr, c.indices, c.data, c.n_minor, p, eps, keep_zero, check,
                           bounds, status, norms, out_indices, out_data)
    bad, disorder = status.sum(axis=0)
    return norms, bad, disorder


def sparse_scale(c, per_major, scale64, out_indices, out_data):
    """out_data = data*scale64[slot] (per major slot or per minor position), out_indices a
    copy of indices where not None; out_data may be c.data. Returns (bad, infinities)."""
    if per_major:
        bounds = _major_bounds(c)
        status = _status(bounds)
        sparse.scale_major(c.indptr, c.indices, c.data, scale64, bounds, status, out_indices,
                           out_data)
    else:
        status = np.zeros((-(-c.data.size // SPARSE_SCALE_CHUNK), 2), np.int64)
        sparse.scale_minor(c.indices, c.data, scale64, SPARSE_SCALE_CHUNK, status, out_indices,
                           out_data)
    bad, infs = status.sum(axis=0)
    return bad, infs


# ---------------------------------------------------------------------------------------------
# window geometry: local_response_norm (numbanorm.cpu.window)

_BETA_MODES = {0.5: 1, 0.75: 2, 1.0: 3, 1.5: 4}


def _window_launch(x3, size, beta):
    """(kernels, beta mode, tile) of a window-kernel call on the (N, C, S) x3: the serial
    twins for small x3, d^(-beta)'s route (cpu.window._neg_power), and the spatial positions
    per work item (see WINDOW_TILE_BYTES)."""
    N, C, S = x3.shape
    per = (3 * (C + size) + 2 * C) * max(4, x3.itemsize)
    tile = max(WINDOW_TILE_MIN, WINDOW_TILE_BYTES // per // 16 * 16)
    return _twins(window, x3.size), _BETA_MODES.get(beta, 0), max(1, min(S, tile))


def window_forward(x3, size, alpha, beta, k, y3=None, phase=0):
    """y of local_response_norm for the C-contiguous (N, C, S) x3, into y3 (C-contiguous, x3's
    shape and dtype, may be x3 itself: a work item reads its tile before writing it) or a
    fresh array. phase: where the window sums' blocks start (cpu.window._sliding): a Dask
    block whose first channel is channel c0 - size//2 of the whole passes (c0 - size//2) %
    size, and its sums are then the whole's, bit for bit."""
    if y3 is None:
        y3 = np.empty(x3.shape, x3.dtype)
    if x3.size:
        kernels, mode, tile = _window_launch(x3, size, beta)
        kernels.forward(_kv(x3), size, alpha, beta, k, mode, tile, phase, _kv(y3))
    return y3


def window_backward(dy3, x3, size, alpha, beta, k, dx3=None):
    """dx of local_response_norm (C-contiguous (N, C, S) dy3 and x3), into dx3 or a fresh
    array."""
    if dx3 is None:
        dx3 = np.empty(x3.shape, x3.dtype)
    if x3.size:
        kernels, mode, tile = _window_launch(x3, size, beta)
        kernels.backward(_kv(dy3), _kv(x3), size, alpha, beta, k, mode, tile, _kv(dx3))
    return dx3


# ---------------------------------------------------------------------------------------------
# the statistics-mixing ops (numbanorm.adaptive)

def slot_sums(x2, dy2, mean64):
    """Per-row float64 (sum(dy), sum(dy*(x - mean))) of the C-contiguous (R, L) arrays x2 and
    dy2 (mean64: float64 per row): the backward's one reduction pass of the statistics-mixing
    ops (numbanorm.adaptive; rows.slot_sums)."""
    R = x2.shape[0]
    dt = compute(x2.dtype)
    mh = mean64.astype(dt)
    with np.errstate(invalid="ignore"):
        lo = (mean64 - mh).astype(dt)
    sdy = np.zeros(R)
    sdyx = np.zeros(R)
    if x2.size:
        _twins(rows, x2.size).slot_sums(_kv(dy2), _kv(x2), mh, lo, sdy, sdyx)
    return sdy, sdyx


def slot_dx(x2, dy2, mean64, p64, q64, o64, dx2=None):
    """dx = dy*p + (x - mean)*q + o per row of the C-contiguous (R, L) arrays (float64 per-row
    coefficients), in x's dtype, into dx2 (C-contiguous, x2's shape and dtype) or a fresh
    array (rows.slot_dx: the kernel runs in x's compute dtype, (mh - mean)*q folded into o)."""
    dt = compute(x2.dtype)
    mh = mean64.astype(dt)
    with np.errstate(invalid="ignore", over="ignore"):
        o = (o64 + (mh - mean64) * q64).astype(dt)
        p, q = p64.astype(dt), q64.astype(dt)
    if dx2 is None:
        dx2 = np.empty(x2.shape, x2.dtype)
    if x2.size:
        _twins(rows, x2.size).slot_dx(_kv(dy2), _kv(x2), mh, p, q, o, _kv(dx2))
    return dx2


def data_backward(op, x, axes, dy, stats, params):
    """dx of a data function's forward ("zscore", "minmax_scale", "normalize"; see their
    *_backward docstrings in numbanorm.scaling) over `axes`: NumPy expressions in float64 over
    x and dy (not kernels), in x's dtype. stats: the forward's per-position statistics
    (keepdims shape); params: its arguments."""
    xf = x.astype(np.float64)
    g = dy.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dx = _DATA_DX[op](xf, g, axes, stats, params)
    return dx.astype(x.dtype)


def _zscore_dx(xf, g, axes, st, params):
    ok = ~np.isnan(xf) if params["nan_policy"] == "omit" else np.ones(xf.shape, bool)
    y = (xf - st["mean"]) * st["inv_std"]
    gv = np.where(ok, g, 0.0)
    yv = np.where(ok, y, 0.0)
    n = st["count"]
    sg = gv.sum(axis=axes, keepdims=True)
    sgy = (gv * yv).sum(axis=axes, keepdims=True)
    dx = st["inv_std"] * (g - sg / n - y * sgy / (n - params["ddof"]))
    return np.where(ok, dx, np.nan)


def _minmax_dx(xf, g, axes, st, params):
    ok = ~np.isnan(xf)
    gv = np.where(ok, g, 0.0)
    s, mn, mx = st["scale"], st["data_min"], st["data_max"]
    zero = st["zero_range"]
    at_min = ok & (xf == mn)
    at_max = ok & (xf == mx)
    k_min = at_min.sum(axis=axes, keepdims=True)
    k_max = at_max.sum(axis=axes, keepdims=True)
    t = np.where(zero, 0.0, (xf - mn) / np.where(zero, 1.0, mx - mn))
    t = np.where(ok, t, 0.0)
    g_min = -s * np.where(zero, gv.sum(axis=axes, keepdims=True),
                          (gv * (1.0 - t)).sum(axis=axes, keepdims=True))
    g_max = np.where(zero, 0.0, -s * (gv * t).sum(axis=axes, keepdims=True))
    dx = s * g + at_min * (g_min / k_min) + at_max * (g_max / k_max)
    return np.where(ok, dx, np.nan)


def _normalize_dx(xf, g, axes, st, params):
    p, eps = params["p"], params["eps"]
    N = st["norm"]
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
    return np.where(N >= eps, g / N + gN * dN, g / eps)


_DATA_DX = {"zscore": _zscore_dx, "minmax_scale": _minmax_dx, "normalize": _normalize_dx}
