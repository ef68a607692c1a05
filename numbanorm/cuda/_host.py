"""Host side of the CUDA path: allocate on the device, size the grids, launch. The twin of
numbanorm.cpu._host, whose docstring gives the contract both keep (same functions, arguments
and returns, same geometry tuples and Saved record); here every array is a numba device array
(x C-contiguous), and nothing copies data between host and device (numbanorm._placement does).

Launch sizes come from numbanorm._config (CUDA_THREADS, CUDA_TARGET_BLOCKS,
CUDA_MAX_PARTIALS). The partition of rows into partials depends on the shape and that config
only, so results are bitwise identical from run to run.
"""

import math
from types import SimpleNamespace

import numpy as np

from .. import _device
from .._chan import lp_norms
from .._dtypes import compute
from .._layout import DataView, layout_of, runs
from .._config import (CUDA_MAX_PARTIALS, CUDA_ROW_CHUNK, CUDA_ROW_VALUES_PER_THREAD,
                       CUDA_TARGET_BLOCKS, CUDA_THREADS)
from . import channels, rows, window

_UNIT = {}


def empty(shape, dtype):
    return _device.cuda().device_array(shape, dtype)


def _flat(a):
    return a.reshape(a.size)


def _blocks(items, per_block=CUDA_THREADS):
    return max(1, min(-(-items // per_block), 8 * CUDA_TARGET_BLOCKS))


def param(p, size, dtype, fill):
    """p flattened, or a cached device constant (in the dtype x of `dtype` computes in)
    standing in for a missing weight or bias."""
    if p is not None:
        return _flat(p)
    key = (size, compute(np.dtype(dtype)), fill)
    unit = _UNIT.get(key)
    if unit is None:
        unit = _UNIT[key] = _device.cuda().to_device(np.full(max(size, 1), fill, key[1]))
    return unit


def public(stat64, dtype, shape, broadcast=None):
    """A float64 device statistic in the dtype x computes in (x's, float32 for 16-bit x) and
    its shape (device arrays do not broadcast: the channels' statistics stay (C,),
    `broadcast` is ignored)."""
    return _cast(stat64, compute(np.dtype(dtype)), shape)


def _cast(stat64, dtype, shape):
    """A float64 device array in dtype (one rounding) and the given shape."""
    out = empty(stat64.size, dtype)
    if stat64.size:
        channels.cast[_blocks(stat64.size), CUDA_THREADS](stat64, out)
    return out.reshape(shape) if len(shape) else out


def _partition(N, M):
    """(P partitions, rows per partition, grid) for a column reduction over an (N, M) matrix."""
    col_blocks = -(-M // CUDA_THREADS)
    P = max(1, min(N, CUDA_MAX_PARTIALS, -(-CUDA_TARGET_BLOCKS // col_blocks)))
    rows_per = -(-N // P)
    P = -(-N // rows_per)
    return P, rows_per, (min(col_blocks, 8 * CUDA_TARGET_BLOCKS), P)


# ---------------------------------------------------------------------------------------------
# rows geometry

def _row_width(L):
    """Threads per row of L values (see CUDA_ROW_VALUES_PER_THREAD): a power of two."""
    width = 1
    while width < CUDA_THREADS and width * CUDA_ROW_VALUES_PER_THREAD < L:
        width *= 2
    return width


def _row_chunks(R, L):
    """Chunks per row, a block each: 1 unless the rows are too few to give every block of a
    CUDA_TARGET_BLOCKS launch one and long enough to cut into chunks of at least
    CUDA_ROW_CHUNK values. Set by the shape and the config only."""
    if R >= CUDA_TARGET_BLOCKS:
        return 1
    return max(1, min(L // CUDA_ROW_CHUNK, CUDA_TARGET_BLOCKS // max(R, 1)))


def rows_forward(x, geometry, weight, bias, eps, y=None):
    """(y, mean64, rstd64, x2) for a C-contiguous device x viewed as (R, L); y: where to write
    (x itself is safe: each thread writes only the elements it read, after the row's
    statistics), or None for a fresh array."""
    _, R, L, G, S, C, centered = geometry
    x2 = x.reshape(R, L)
    y = empty(x.shape, x.dtype) if y is None else y
    mean64 = empty(R, np.float64)
    rstd64 = empty(R, np.float64)
    P = _row_chunks(R, L)
    w, b = param(weight, C, x.dtype, 1), param(bias, C, x.dtype, 0)
    if R and L and P > 1:
        pn, pmean, pm2 = (empty((R, P), np.float64) for _ in range(3))
        rows.chunk_moments[_blocks(R * P, 1), CUDA_THREADS](x2, P, centered, pn, pmean, pm2)
        rows.merge_chunk_moments[_blocks(R, 1), CUDA_THREADS](x2, pn, pmean, pm2, centered, eps,
                                                              mean64, rstd64)
        rows.split_affine[_blocks(R * L), CUDA_THREADS](_flat(x2), L, G, S, L // S, mean64,
                                                        rstd64, w, b, _flat(y))
    elif R and L:
        width = _row_width(L)
        rows.forward[_blocks(R, CUDA_THREADS // width), CUDA_THREADS](
            x2, G, S, L // S, w, b, eps, centered, width, y.reshape(R, L), mean64, rstd64)
    return y, mean64, rstd64, x2


def param_sums(dy2, x2, mean64, rstd64, stat_stride, Cg, C, S):
    """Per-channel float64 (sum(dy), sum(dy*xhat)) over the rows of (N, C*S) matrices."""
    N, M = x2.shape
    sum_dy = empty(C, np.float64)
    sum_dyx = empty(C, np.float64)
    P, rows_per, grid = _partition(N, M)
    pdy = empty((P, M), np.float64)
    pdyx = empty((P, M), np.float64)
    channels.column_sums[grid, CUDA_THREADS](dy2, x2, mean64, rstd64, stat_stride, Cg, S,
                                             rows_per, pdy, pdyx)
    channels.merge_sums[_blocks(C, 1), CUDA_THREADS](pdy, pdyx, S, sum_dy, sum_dyx)
    return sum_dy, sum_dyx


def rows_backward(dy, saved, dx=None):
    """(dx, dweight, dbias); dx: where to write (overlapping neither dy nor x), or None."""
    _, R, L, G, S, C, centered = saved._geometry
    x2 = saved._x
    dy2 = dy.reshape(R, L)
    dx = empty(saved._shape, x2.dtype) if dx is None else dx
    weight = saved._weight
    P = _row_chunks(R, L)
    w = param(weight, C, x2.dtype, 1)
    if R and L and P > 1:
        psg, psgx = (empty((R, P), np.float64) for _ in range(2))
        rows.chunk_grad_sums[_blocks(R * P, 1), CUDA_THREADS](
            dy2, x2, saved._mean64, saved._rstd64, G, S, L // S, w, P, psg, psgx)
        sg, sgx = empty(R, np.float64), empty(R, np.float64)
        rows.merge_chunk_sums[_blocks(R), CUDA_THREADS](psg, psgx, sg, sgx)
        rows.split_dx[_blocks(R * L), CUDA_THREADS](
            _flat(dy2), _flat(x2), L, G, S, L // S, saved._mean64, saved._rstd64, w, centered,
            sg, sgx, _flat(dx))
    elif R and L:
        width = _row_width(L)
        rows.backward[_blocks(R, CUDA_THREADS // width), CUDA_THREADS](
            dy2, x2, saved._mean64, saved._rstd64, G, S, L // S, w, centered, width,
            dx.reshape(R, L))
    dweight = dbias = None
    if weight is not None or saved._bias_shape is not None:
        if R and L:
            # (R, Cg*S) rows of G groups = (R/G, C*S): channel c, group row n*G + c//Cg
            sum_dy, sum_dyx = param_sums(dy2.reshape(R // G, C * S), x2.reshape(R // G, C * S),
                                         saved._mean64, saved._rstd64, G, L // S, C, S)
        else:
            sum_dy = sum_dyx = _constant(C, 0.0)
        if weight is not None:
            dweight = _cast(sum_dyx, saved._param_dtype, weight.shape)
        if saved._bias_shape is not None:
            dbias = _cast(sum_dy, saved._param_dtype, saved._bias_shape)
    return dx, dweight, dbias


def add_rows_forward(x2, r2, weight, bias, eps, centered, y2=None, h2=None, h_dtype=None):
    """(y2, h2, mean64, rstd64, (s2, None)) of the fused residual add + norm on (R, L) device
    rows (the contract of cpu._host.add_rows_forward): the sum s in the dtype x computes in
    (h itself where h has that dtype, else a scratch array the record keeps), then the rows
    kernels on s (rows.add_sum, rows_forward): two passes more than the CPU's one."""
    R, L = x2.shape
    h_dtype = np.dtype(h_dtype or x2.dtype)
    y2 = empty(x2.shape, x2.dtype) if y2 is None else y2
    h2 = empty(x2.shape, h_dtype) if h2 is None else h2
    s_dtype = compute(x2.dtype)
    s2 = h2 if h_dtype == s_dtype else empty(x2.shape, s_dtype)
    if x2.size:
        rows.add_sum[_blocks(x2.size), CUDA_THREADS](_flat(x2), _flat(r2), _flat(s2), _flat(h2))
    _, mean64, rstd64, _ = rows_forward(s2, ("rows", R, L, 1, 1, L, centered), weight, bias,
                                        eps, y2)
    return y2, h2, mean64, rstd64, (s2, None)


def add_rows_backward(dy2, saved, dh2=None, dx2=None):
    """(dx, dresidual, dweight, dbias) of an add_rows_forward (the contract of
    cpu._host.add_rows_backward): rows_backward on the saved sum, then dh added (rows.add_grad)
    where dh is given or the residual's dtype differs from x's."""
    _, R, L, _, res_dtype, x_dtype, _, centered = saved._geometry
    s2 = saved._x
    rows_saved = SimpleNamespace(
        _geometry=("rows", R, L, 1, 1, L, centered), _x=s2, _shape=(R, L),
        _weight=saved._weight, _mean64=saved._mean64, _rstd64=saved._rstd64,
        _bias_shape=saved._bias_shape, _param_dtype=saved._param_dtype)
    dx2 = empty((R, L), x_dtype) if dx2 is None else dx2
    if dh2 is None and res_dtype == x_dtype:
        _, dweight, dbias = rows_backward(dy2, rows_saved, dx2)
        return dx2, dx2, dweight, dbias
    g2 = empty((R, L), s2.dtype)
    _, dweight, dbias = rows_backward(dy2, rows_saved, g2)
    dres = dx2 if res_dtype == x_dtype else empty((R, L), res_dtype)
    if g2.size:
        rows.add_grad[_blocks(g2.size), CUDA_THREADS](
            _flat(g2), _flat(g2 if dh2 is None else dh2), dh2 is not None, _flat(dx2),
            _flat(dres))
    return dx2, dres, dweight, dbias


def channels_last_forward(x3, G, weight, bias, eps, y3=None):
    """(y3, mean64, rstd64) of group_norm on the C-contiguous (N, S, C) device x3 (the contract
    of cpu._host.channels_last_forward): on the device through a channels-first copy (x3
    permuted to (N, C, S) by channels.permute, the rows kernels, y permuted back): two extra
    passes, where the CPU reads the memory where it lies; a native kernel is to come."""
    N, S, C = x3.shape
    yc, mean64, rstd64, _ = rows_forward(_permuted(x3, (0, 2, 1)),
                                         ("rows", N * G, C // G * S, G, S, C, True), weight,
                                         bias, eps)
    y = _permuted(yc, (0, 2, 1))
    if y3 is not None:
        y3.copy_to_device(y)
        y = y3
    return y, mean64.reshape(N, G), rstd64.reshape(N, G)


def channels_last_backward(dy3, saved, dx3=None):
    """(dx, dweight, dbias) of a channels_last_forward (the contract of
    cpu._host.channels_last_backward), through channels-first copies as the forward."""
    x3 = saved._x
    G = saved._geometry[1]
    N, S, C = x3.shape
    R, L = N * G, C // G * S
    rows_saved = SimpleNamespace(
        _geometry=("rows", R, L, G, S, C, True), _x=_permuted(x3, (0, 2, 1)).reshape(R, L),
        _shape=(N, C, S), _weight=saved._weight, _mean64=saved._mean64,
        _rstd64=saved._rstd64, _bias_shape=saved._bias_shape, _param_dtype=saved._param_dtype)
    dxc, dweight, dbias = rows_backward(_permuted(dy3, (0, 2, 1)), rows_saved)
    dx = _permuted(dxc, (0, 2, 1))
    if dx3 is not None:
        dx3.copy_to_device(dx)
        dx = dx3
    return dx, dweight, dbias


def instance_running_update(mean64, rstd64, N, C, S, eps, momentum, running_mean,
                            running_var):
    channels.instance_running_update[_blocks(C), CUDA_THREADS](
        mean64, rstd64, N, S, eps, momentum, running_mean, running_var)


# ---------------------------------------------------------------------------------------------
# channels geometry: batch_norm

def channels_forward(x, training, eps, momentum, running_mean, running_var, weight, bias,
                     y=None):
    """(y, mean64, rstd64, x3) for (N, C, *) x normalised per channel, with the batch's
    statistics when training (running buffers updated in the statistics kernel; an empty batch
    has NaN statistics and leaves them alone), else with the running buffers."""
    N, C = x.shape[:2]
    S = math.prod(x.shape[2:])
    x3 = x.reshape(N, C, S)
    if not training:
        mean64, rstd64 = running_stats(running_mean, running_var, eps)
    elif N * S == 0:
        mean64 = rstd64 = fill_nan(C)
    else:
        mean64, rstd64 = channel_stats(x3, eps, momentum, running_mean, running_var)
    y = channels_affine(x3, mean64, rstd64, weight, bias, y).reshape(x.shape)
    return y, mean64, rstd64, x3


def channel_stats(x3, eps, momentum, running_mean, running_var):
    """Per-channel float64 (mean, rstd) of a device (N, C, S) array; running buffers (device
    arrays or None) are updated in place by the same kernel."""
    N, C, S = x3.shape
    x2 = x3.reshape(N, C * S)
    P, rows_per, grid = _partition(N, C * S)
    pmean = empty((P, C * S), np.float64)
    pm2 = empty((P, C * S), np.float64)
    channels.column_moments[grid, CUDA_THREADS](x2, rows_per, pmean, pm2)
    mean64 = empty(C, np.float64)
    rstd64 = empty(C, np.float64)
    update = running_mean is not None
    if not update:
        running_mean = running_var = mean64  # never written (update is False)
    channels.merge_moments[_blocks(C, 1), CUDA_THREADS](
        pmean, pm2, rows_per, S, x2, eps, momentum, update, running_mean, running_var, mean64,
        rstd64)
    return mean64, rstd64


def running_stats(running_mean, running_var, eps):
    C = running_mean.shape[0]
    mean64 = empty(C, np.float64)
    rstd64 = empty(C, np.float64)
    channels.running_stats[_blocks(C), CUDA_THREADS](running_mean, running_var, eps, mean64,
                                                     rstd64)
    return mean64, rstd64


def channels_affine(x3, mean64, rstd64, weight, bias, y=None):
    """y = (x - mean)*rstd*w + b per channel, elementwise (so y may be x itself), into y or a
    fresh array."""
    N, C, S = x3.shape
    y = empty(x3.shape, x3.dtype) if y is None else y
    if x3.size:
        channels.affine[_blocks(x3.size), CUDA_THREADS](
            _flat(x3), C, S, mean64, rstd64, param(weight, C, x3.dtype, 1),
            param(bias, C, x3.dtype, 0), _flat(y))
    return y


def channels_backward(dy, saved, dx=None):
    """(dx, dweight, dbias); dx: where to write (overlapping neither dy nor x), or None."""
    _, training = saved._geometry
    x3 = saved._x
    N, C, S = x3.shape
    dy3 = dy.reshape(N, C, S)
    weight = saved._weight
    want_params = weight is not None or saved._bias_shape is not None
    dx = empty(x3.shape, x3.dtype) if dx is None else dx
    if x3.size and (training or want_params):
        sum_dy, sum_dyx = param_sums(dy3.reshape(N, C * S), x3.reshape(N, C * S),
                                     saved._mean64, saved._rstd64, 0, 1, C, S)
    else:
        sum_dy = sum_dyx = _constant(C, 0.0)
    if x3.size:
        channels.dx[_blocks(x3.size), CUDA_THREADS](
            _flat(dy3), _flat(x3), C, S, saved._mean64, saved._rstd64,
            param(weight, C, x3.dtype, 1), sum_dy, sum_dyx, float(N * S), training, _flat(dx))
    dweight = _cast(sum_dyx, saved._param_dtype, (C,)) if weight is not None else None
    dbias = _cast(sum_dy, saved._param_dtype, (C,)) if saved._bias_shape is not None else None
    return dx.reshape(saved._shape), dweight, dbias


def _constant(n, value):
    """A fresh float64 device array of n copies of value."""
    return _device.cuda().to_device(np.full(n, value))


def fill_nan(n):
    return _constant(n, np.nan)




# ---------------------------------------------------------------------------------------------
# data normalization (numbanorm.scaling, numbanorm.moments): the contract of
# numbanorm.cpu._host's data functions; the per-slot statistics come back to the host as
# NumPy float64 arrays (they are small: one value per output position).

def data_view(x, axes):
    """The DataView of the C-contiguous device x for a reduction over axes: x itself viewed
    as rows, columns or slabs, or, when the reduced axes interleave with kept ones, one copy
    on the device with the kept axes first and the reduced ones last (channels.permute)."""
    lay = layout_of(x.shape, axes)
    xk = x if lay.perm is None else _permuted(x, lay.perm)
    return DataView(x, axes, lay, xk.reshape(lay.dims))


def _permuted(x, perm):
    shape = tuple(x.shape[a] for a in perm)
    strides = [math.prod(x.shape[a + 1:]) for a in range(x.ndim)]
    out = empty(shape, x.dtype)
    if x.size:
        channels.permute[_blocks(x.size), CUDA_THREADS](
            _flat(x), _index_array(shape), _index_array([strides[a] for a in perm]),
            _flat(out))
    return out


def _index_array(values):
    return _device.to_device(np.array(list(values) or [1], np.int64))


def _column_partition(N, M):
    """_partition for N rows or M columns that may be 0 (one partition, maybe of nothing)."""
    return _partition(N, M) if N and M else (1, 1, (_blocks(M), 1))


def _upload(v, slots):
    """v (a scalar or per-slot values) as a float64 device array of the slots (one value at
    least)."""
    return _device.to_device(np.ascontiguousarray(np.broadcast_to(
        np.asarray(v, np.float64), (max(slots, 1),))))


def _slot_partials(lay, n, launch_columns, launch_rows):
    """(slots, parts): n float64 partial arrays (K, slots) of a per-slot reduction over the
    layout, K in the order the caller merges them. Columns (A, N, M): slot a*M + m, partials
    per partition of the rows, by launch_columns(grid, rows_per, parts). Rows (R, L) and slabs
    (N*C, S rows, slot r % C): each row cut into P chunks (_row_chunks) of groups of `width`
    threads, chunk p of row r at [p, r], by launch_rows(launch, R, L, P, width, parts)."""
    if lay.kind == "columns":
        A, N, M = lay.dims
        slots = A * M
        P, rows_per, grid = _column_partition(N, slots)
        parts = [empty((P, slots), np.float64) for _ in range(n)]
        if slots:
            launch_columns(grid, rows_per, parts)
        return slots, parts
    if lay.kind == "rows":
        R, L = lay.dims
        slots = R
    else:
        N, C, S = lay.dims
        R, L, slots = N * C, S, C
    P = _row_chunks(R, L)
    parts = [empty((P, R), np.float64) for _ in range(n)]
    if R:
        width = _row_width(-(-L // P))
        launch_rows((_blocks(R * P, CUDA_THREADS // width), CUDA_THREADS), R, L, P, width,
                    parts)
    if slots:
        parts = [a.reshape(P * R // slots, slots) for a in parts]
    return slots, parts


def data_moments(view, nan_policy, want_range, want_moments=True):
    """Per-slot float64 NumPy (count, mean, m2, lo, hi, nans), as cpu._host.data_moments (all
    six are computed, by one read of x: rows.data_moments or channels.data_column_moments,
    then channels.merge_data); nan_policy 'raise' raises after the read when a NaN was
    counted."""
    omit = nan_policy == "omit"
    xk = view.xk

    def columns(grid, rows_per, parts):
        channels.data_column_moments[grid, CUDA_THREADS](xk, rows_per, omit, *parts)

    def by_rows(launch, R, L, P, width, parts):
        rows.data_moments[launch](xk.reshape(R, L), P, omit, width, *parts)
    slots, parts = _slot_partials(view.lay, 6, columns, by_rows)
    res = [empty(slots, np.float64) for _ in range(6)]
    if slots:
        channels.merge_data[_blocks(slots), CUDA_THREADS](*parts, *res)
    count, mean, m2, lo, hi, nans = (a.copy_to_host() for a in res)
    if nan_policy == "raise" and nans.any():
        raise ValueError("The input contains nan values (nan_policy='raise'; 'omit' leaves "
                         "NaN out, 'propagate' keeps it in the results)")
    if not omit:  # Moments' rule, as on the CPU
        lo = np.where(nans > 0, np.nan, lo)
        hi = np.where(nans > 0, np.nan, hi)
    return count, mean, m2, lo, hi, nans


def _merged_sums(slots, parts, power=1.0):
    """Each (K, slots) partial array added over K in order (power = inf: max) by
    channels.merge_norms, as device arrays."""
    out = [empty(slots, np.float64) for _ in parts]
    if slots:
        for part, o in zip(parts, out):
            channels.merge_norms[_blocks(slots), CUDA_THREADS](part, power, o)
    return out


def data_affine(view, mean64, scale64, shift64, out=None):
    """y = (x - mean)*scale + shift per slot (float64 NumPy per-slot arrays; shift may be a
    scalar), computed in float64 and rounded once to x's dtype, over x in its own order
    (channels.data_affine: interleaved axes need no copy), into out (a device array of x's
    shape and dtype, may be x itself) or a fresh array."""
    x = view.x
    y = empty(x.shape, x.dtype) if out is None else out
    if x.size:
        sizes, strides = _run_strides(x.shape, view.axes)
        slots = mean64.size
        channels.data_affine[_blocks(x.size), CUDA_THREADS](
            _flat(x), _index_array(sizes), _index_array(strides), _upload(mean64, slots),
            _upload(scale64, slots), _upload(shift64, slots), _flat(y))
    return y


def data_norms(view, p):
    """Per-slot float64 NumPy Lp norms, as cpu._host.data_norms: the power sums by one read
    (rows.data_norms or channels.data_column_norms, merged by channels.merge_norms); slots whose
    sums overflowed or underflowed on finite nonzero data summed again, scaled by their
    max |x|."""
    def rescaled(redo, big):
        inv = np.where(redo, 1.0 / np.where(redo, big, 1.0), 1.0)
        return big * _power_sums(view, p, inv) ** (1.0 / p)
    return lp_norms(lambda q: _power_sums(view, q, 1.0), p, rescaled)


def _power_sums(view, p, inv):
    """Per-slot sum(|x*inv|^p) (p = inf: max |x|; inv a scalar or per slot) as a NumPy float64
    array."""
    lay, xk = view.lay, view.xk
    slots = math.prod(lay.shape)
    inv = _upload(inv, slots)

    def columns(grid, rows_per, parts):
        channels.data_column_norms[grid, CUDA_THREADS](xk, rows_per, p, inv, parts[0])

    def by_rows(launch, R, L, P, width, parts):
        rows.data_norms[launch](xk.reshape(R, L), P, p, inv, max(slots, 1), width, parts[0])
    slots, parts = _slot_partials(lay, 1, columns, by_rows)
    return _merged_sums(slots, parts, p)[0].copy_to_host()


_GRAD_OPS = {"zscore": 0, "minmax_scale": 1, "normalize": 2}


def data_backward(op, x, axes, dy, stats, params):
    """dx of a data function's forward on the device (the contract of
    cpu._host.data_backward): the four per-slot sums of _reduce.grad_terms by one read of x
    and dy in the forward's layout (rows.data_grad_sums or channels.data_column_grad_sums,
    merged in order), then dx elementwise over x in its own order (channels.data_dx). stats:
    the forward's per-position statistics (NumPy, keepdims shape); dy a device array of x's
    shape. Interleaved axes: x and dy are copied once each on the device, as in the forward's
    statistics pass."""
    view = data_view(x, axes)
    lay = view.lay
    slots = math.prod(lay.shape)

    def per_slot(v):
        return _upload(lay.slots(np.broadcast_to(np.asarray(v, np.float64),
                                                 lay.keepdims_shape)) if slots else 0.0, slots)
    code = _GRAD_OPS[op]
    zero = np.zeros(lay.keepdims_shape)
    if op == "zscore":
        q = (stats["mean"], stats["inv_std"], stats["count"], zero)
        c = (1.0 if params["nan_policy"] == "omit" else 0.0, float(params["ddof"]))
    elif op == "minmax_scale":
        q = (stats["data_min"], stats["data_max"], stats["scale"], stats["zero_range"])
        c = (0.0, 0.0)
    else:
        q = (stats["norm"], zero, zero, zero)
        c = (float(params["eps"]), float(params["p"]))
    q = [per_slot(v) for v in q]
    dx = empty(x.shape, x.dtype)
    if not x.size:
        return dx
    xk = view.xk
    dyk = (dy if lay.perm is None else _permuted(dy, lay.perm)).reshape(lay.dims)

    def columns(grid, rows_per, parts):
        channels.data_column_grad_sums[grid, CUDA_THREADS](
            xk, dyk, rows_per, code, q[0], q[1], q[3], c[0], c[1], *parts)

    def by_rows(launch, R, L, P, width, parts):
        rows.data_grad_sums[launch](xk.reshape(R, L), dyk.reshape(R, L), P, code, slots, q[0],
                                    q[1], q[3], c[0], c[1], width, *parts)
    _, parts = _slot_partials(lay, 4, columns, by_rows)
    sums = _merged_sums(slots, parts)
    sizes, strides = _run_strides(x.shape, view.axes)
    channels.data_dx[_blocks(x.size), CUDA_THREADS](
        code, _flat(x), _flat(dy), _index_array(sizes), _index_array(strides), *q, *sums,
        c[0], c[1], _flat(dx))
    return dx


# ---------------------------------------------------------------------------------------------
# window geometry: local_response_norm (numbanorm.cuda.window)

def window_forward(x3, size, alpha, beta, k, y3=None, phase=0):
    """y of local_response_norm for the C-contiguous (N, C, S) device x3 (the contract of
    cpu._host.window_forward; phase does not apply: each window is summed directly). y3 may
    be x3 itself: threads read their neighbours' x, so an in-place call computes into a fresh
    array and copies it over."""
    inplace = y3 is not None and x3.size and _device.span(y3)[0] == _device.span(x3)[0]
    y = empty(x3.shape, x3.dtype) if y3 is None or inplace else y3
    if x3.size:
        window.forward[_blocks(x3.size), CUDA_THREADS](x3, size, alpha, beta, k, y)
    if inplace:
        y3.copy_to_device(y)
        return y3
    return y


def window_backward(dy3, x3, size, alpha, beta, k, dx3=None):
    """dx of local_response_norm (the contract of cpu._host.window_backward): the terms t into
    float64 scratch, then dx (cuda.window)."""
    dx3 = empty(x3.shape, x3.dtype) if dx3 is None else dx3
    if x3.size:
        t3 = empty(x3.shape, np.float64)
        grid = _blocks(x3.size), CUDA_THREADS
        window.backward_terms[grid](dy3, x3, size, alpha, beta, k, t3)
        window.backward[grid](dy3, x3, t3, size, alpha, beta, k, dx3)
    return dx3


def slot_sums(x2, dy2, mean64):
    """Per-row float64 NumPy (sum(dy), sum(dy*(x - mean))) of the C-contiguous (R, L) device
    arrays (the contract of cpu._host.slot_sums): rows.data_grad_sums with zscore's terms at
    inv_std 1 (_reduce.grad_terms op 0), merged in order."""
    R = x2.shape[0]
    q = (_upload(mean64, R), _upload(1.0, R), _upload(0.0, R))

    def by_rows(launch, R_, L, P, width, parts):
        rows.data_grad_sums[launch](x2, dy2, P, 0, R, q[0], q[1], q[2], 0.0, 0.0, width,
                                    *parts)
    if not x2.size:
        return np.zeros(R), np.zeros(R)
    _, parts = _slot_partials(data_view(x2, (1,)).lay, 4, None, by_rows)
    return tuple(s.copy_to_host() for s in _merged_sums(R, parts[:2]))


def slot_dx(x2, dy2, mean64, p64, q64, o64, dx2=None):
    """dx = dy*p + (x - mean)*q + o per row of the (R, L) device arrays, in float64 rounded
    once to x's dtype (channels.data_dx op 3; the contract of cpu._host.slot_dx)."""
    R = x2.shape[0]
    dx2 = empty(x2.shape, x2.dtype) if dx2 is None else dx2
    if x2.size:
        sizes, strides = _run_strides(x2.shape, (1,))
        zero = _upload(0.0, R)
        channels.data_dx[_blocks(x2.size), CUDA_THREADS](
            3, _flat(x2), _flat(dy2), _index_array(sizes), _index_array(strides),
            _upload(p64, R), _upload(mean64, R), _upload(q64, R), _upload(o64, R),
            zero, zero, zero, zero, 0.0, 0.0, _flat(dx2))
    return dx2


def _run_strides(shape, axes):
    """(sizes, slot strides) of the runs of x's axes, reduced over axes (see
    channels._slot): sizes 1 dropped, neighbours of one kind merged."""
    rs = runs(shape, set(axes))
    strides = []
    stride = 1
    for reduced, n in reversed(rs):
        strides.append(0 if reduced else stride)
        stride *= 1 if reduced else n
    return [n for _, n in rs], strides[::-1]
