"""The functional API: PyTorch's names, arguments and defaults, NumPy arrays in and out.

Each op NAME has three entry points:

    NAME(x, ...)                 -> y
    NAME_forward(x, ...)         -> (y, saved)      saved: a `Saved` record for the backward
    NAME_backward(dy, saved)     -> (dx, dweight, dbias)   (rms_norm: (dx, dweight))

Forwards take out= (y written there; in the plain functions it may be x itself), backwards
dx_out= (dx written there; it may overlap neither dy nor x). Reusing one output array across
calls saves the page faults of a fresh one: a fresh 64 MiB array costs 5-7 ms to fault in on
this project's 2-core machine, as much as the kernel that fills it.

Data flows one way: validate (numbanorm._validate) -> contiguous 2-D/3-D view -> CPU kernel of
the op's geometry (numbanorm.cpu.rows or numbanorm.cpu.channels) -> reshape back. Statistics
and gradients are merged and returned in float64 (within a block the kernels work in the data's
dtype: see numbanorm.cpu._moments); outputs have the input's dtype and shape.

A copy of x is made only when x is not C-contiguous (Fortran order, transposes, strided
views); the kernels then read the copy, which `saved` keeps for the backward pass.

GPU arrays (`__cuda_array_interface__`) run on the CUDA kernels of numbanorm.cuda instead, and
every forward takes `device=`: "cuda" sends NumPy input to the GPU and returns NumPy, "cpu"
insists on the CPU, None (default) follows the data or the NUMBANORM_DEVICE variable.
"""
import math
import threading

import numba
import numpy as np

from . import _device
from . import _validate as V
from ._config import (BLOCK, COLUMN_BLOCK_BYTES, COLUMN_BLOCK_MAX_ROWS, COLUMN_MIN_ROWS,
                      COLUMN_PARTIAL_MIN_ELEMENTS, COLUMN_SHIFT_MIN_ROWS, COLUMN_STRIP_BYTES,
                      COLUMN_SUMS_ROWS, FUSED_COLUMNS_MAX_ELEMENTS, MAX_PARTIALS,
                      PARTIAL_MIN_ELEMENTS, ROW_PAIR_MIN_BYTES, SERIAL_MAX_ELEMENTS, SLAB_MIN,
                      SLAB_MIN_BACKWARD, SLAB_MIN_WIDE)
from .cpu import channels, rows

__all__ = [
    "Saved",
    "batch_norm", "batch_norm_forward", "batch_norm_backward",
    "layer_norm", "layer_norm_forward", "layer_norm_backward",
    "group_norm", "group_norm_forward", "group_norm_backward",
    "instance_norm", "instance_norm_forward", "instance_norm_backward",
    "rms_norm", "rms_norm_forward", "rms_norm_backward",
]


class Saved:
    """What a forward pass keeps for its backward pass.

    op, mean, rstd (read-only): the op's name and the statistics used to normalise, shaped by
    the normalised groups and in the input's dtype (mean is None for rms_norm). The rest is
    private: the input (the contiguous view the kernels read), float64 copies of the
    statistics, the weight and the geometry. The record holds a reference to x, as autograd
    does: modifying x in place between forward and backward makes the backward wrong.

    A plain slotted class, not a frozen dataclass: building one took 1.7-2.9 us, as long as a
    whole tiny layer_norm, and a layer builds one per call. mean and rstd are made from the
    float64 statistics on first access where the caller does not give them (the CPU rows
    path): a training step that never reads them skips two casts (~1 us).
    """
    __slots__ = ("_op", "_x", "_mean64", "_rstd64", "_weight", "_bias_shape", "_geometry",
                 "_shape", "_place", "_stats", "_stat_shape")

    def __init__(self, op, x, mean64, rstd64, weight, bias_shape, geometry, shape, place=None,
                 stats=None, stat_shape=None):
        self._op = op
        self._x = x
        self._mean64 = mean64
        self._rstd64 = rstd64
        self._weight = weight
        self._bias_shape = bias_shape  # None: no bias
        self._geometry = geometry
        self._shape = shape
        self._place = place
        self._stats = stats  # (mean, rstd), or None: made from the float64 ones when asked
        self._stat_shape = stat_shape

    @property
    def op(self):
        return self._op

    @property
    def mean(self):
        return self._public_stats()[0]

    @property
    def rstd(self):
        return self._public_stats()[1]

    def _public_stats(self):
        stats = self._stats
        if stats is None:  # CPU rows: the float64 statistics in x's dtype and group shape
            dtype = self._x.dtype
            centered = self._geometry[-1]
            stats = self._stats = (
                _public(self._mean64, dtype, self._stat_shape) if centered else None,
                _public(self._rstd64, dtype, self._stat_shape))
        return stats

    def __repr__(self):
        return f"Saved(op={self._op!r}, mean={self.mean!r}, rstd={self.rstd!r})"


# ---------------------------------------------------------------------------------------------
# placement: which backend runs a call, and how its arrays get there and back

class _Place:
    """Where one call runs. gpu: the CUDA kernels. host_io: NumPy x sent to the GPU by
    device="cuda" (or NUMBANORM_DEVICE=cuda): arrays go over and results come back as NumPy,
    running buffers included. like: the caller's x, whose kind of array results take."""

    __slots__ = ("gpu", "host_io", "like", "x", "_writeback")

    def __init__(self, gpu, host_io, like, x):
        self.gpu, self.host_io, self.like, self.x = gpu, host_io, like, x
        self._writeback = []

    def param(self, p, name, updated=False):
        """p (already validated) on the call's side, or a clear error where it can't be."""
        if p is None:
            return None
        on_gpu = not isinstance(p, np.ndarray)
        if on_gpu == self.gpu:
            return p
        if on_gpu:
            raise ValueError(f"{name} is on the GPU but x is a NumPy array: pass device='cuda' "
                             f"to run on the GPU, or a NumPy {name}")
        if updated and not self.host_io:
            raise ValueError(f"{name} is a NumPy array but x is on the GPU, and training "
                             f"updates {name} in place: move a layer to the GPU with "
                             f"layer.to('cuda') (its parameters and buffers go with it), or "
                             f"pass a GPU {name} to the function")
        d = _device.to_device(np.ascontiguousarray(p))
        if updated:
            self._writeback.append((d, p))
        return d

    def write_back(self):
        """Copy running buffers updated on the GPU into the caller's NumPy arrays (host_io):
        all are copied to the host before any is written, so both or neither change."""
        fresh = [(d.copy_to_host(), p) for d, p in self._writeback]
        for value, p in fresh:
            p[...] = value

    def target(self, out):
        """Where a kernel writes its result: out's own memory (a zero-copy device view) when
        out is a GPU array, so out= and dx_out= cost no extra pass over the data; None (a
        fresh device array, delivered afterwards) otherwise."""
        if out is None or self.host_io:
            return None
        return _device.to_device(out)

    def deliver(self, y, out):
        """A device result as the caller's kind of array (into out when given; nothing to copy
        when the kernel wrote into out's memory, see target)."""
        if self.host_io:
            y = y.copy_to_host()
            return _deliver(y, out)
        if out is not None:
            d = self.target(out)
            if _device.span(d)[0] != _device.span(y)[0]:
                d.copy_to_device(y)
            return out
        return _device.wrap_like(y, self.like)

    def stat(self, a):
        return a.copy_to_host() if self.host_io else a


def _placement(x, device):
    """(x validated on the side it runs, _Place). NumPy x runs on the CPU unless device='cuda'
    (or NUMBANORM_DEVICE=cuda) asks for the GPU; GPU x always runs on the GPU."""
    want = _device.requested(device)
    like = x
    x = V.array(x, "x")
    if not isinstance(x, np.ndarray):
        if want == "cpu":
            raise ValueError("x is on the GPU but device='cpu' was asked for: copy it to the "
                             "host first")
        return x, _Place(True, False, like, x)
    if want == "cuda":
        return x, _Place(True, True, like, _device.to_device(np.ascontiguousarray(x)))
    return x, _CPU


_CPU = _Place(False, False, None, None)

# rms_norm's default eps: the machine epsilon of x's dtype (as torch.nn.functional.rms_norm).
_MACHINE_EPS = {t: float(np.finfo(t).eps) for t in (np.float32, np.float64)}


def _cuda():
    """The CUDA host functions (imported on first GPU use only)."""
    from .cuda import _host
    return _host


def _gpu_saved(op, place, geometry, mean64, rstd64, stat_shape, weight, bias, x_kernel, shape,
               centered=True):
    H = _cuda()
    dtype = x_kernel.dtype
    stats = (place.stat(H.public(mean64, dtype, stat_shape)) if centered else None,
             place.stat(H.public(rstd64, dtype, stat_shape)))
    return Saved(op, x_kernel, mean64, rstd64, weight, _shape_of(bias), geometry, shape,
                 place=place, stats=stats)


def _gpu_gradients(place, dx_out, dx, dweight, dbias):
    return (place.deliver(dx, dx_out),) + tuple(None if g is None else place.deliver(g, None)
                                                for g in (dweight, dbias))


# ---------------------------------------------------------------------------------------------
# shared host helpers

def _prod(shape):
    return int(math.prod(shape))


def _target(out, x):
    """The array the kernel writes: out itself when C-contiguous, else a fresh C array."""
    if out is not None and out.flags.c_contiguous:
        return out
    return np.empty(x.shape, x.dtype)


def _deliver(y, out):
    if out is None or out is y:
        return y
    np.copyto(out, y)
    return out


_UNIT_PARAMS = {}


def _param(p, size, dtype, fill):
    """p flattened, or a constant array standing in for a missing weight (1) or bias (0).
    The constants are cached (the kernels only read them)."""
    if p is not None:
        return p if p.ndim == 1 else p.reshape(size)
    key = (size, np.dtype(dtype), fill)
    unit = _UNIT_PARAMS.get(key)
    if unit is None:
        if len(_UNIT_PARAMS) > 64:
            _UNIT_PARAMS.clear()
        unit = _UNIT_PARAMS[key] = np.full(size, fill, dtype)
    return unit


def _nchunks(n_rows, row_size):
    """How many partials a cross-row reduction of n_rows rows of row_size elements is split
    into: a function of the shape only (so results never depend on the thread count). No rows,
    no chunks: the partials then sum to exactly 0, and no buffer row is read that no kernel
    wrote (a reused scratch row once leaked the previous call's dweight into an empty batch's)."""
    return min(n_rows, max(1, min(MAX_PARTIALS, n_rows * row_size // PARTIAL_MIN_ELEMENTS)))


_workspace = threading.local()


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


def _public(stat64, dtype, shape):
    return stat64.astype(dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------
# rows geometry: layer_norm, rms_norm, group_norm, instance_norm (input statistics)

def _rows2d(a, R, L):
    """a as a C-contiguous (R, L) array: a itself when it is one already (a view costs 0.14 us,
    a twentieth of a tiny call), else a reshaped view, or copy, of it."""
    if a.shape == (R, L) and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a).reshape(R, L)


def _rows_forward(op, x, geometry, weight, bias, eps, out, group_shape, keep=True, place=None):
    _, R, L, G, S, C, centered = geometry
    if place is not None and place.gpu:
        y, mean64, rstd64 = _cuda().rows_forward(place.x, geometry, weight, bias, eps,
                                                 place.target(out))
        saved = None
        if keep:
            saved = _gpu_saved(op, place, geometry, mean64, rstd64, group_shape, weight, bias,
                               place.x.reshape(R, L), x.shape, centered)
        return place.deliver(y, out), saved
    x2 = _rows2d(x, R, L)
    y = np.empty(x.shape, x.dtype) if out is None else _target(out, x)
    y2 = y if y.shape == (R, L) else y.reshape(R, L)
    mean64 = np.empty(R)
    rstd64 = np.empty(R)
    if R:
        w = weight if weight is not None and weight.ndim == 1 else _param(weight, C, x.dtype, 1)
        b = bias if bias is not None and bias.ndim == 1 else _param(bias, C, x.dtype, 0)
        if x.size <= SERIAL_MAX_ELEMENTS:
            rows.forward_serial(x2, G, S, w, b, eps, centered, y2, mean64, rstd64)
        elif G == 1 and S == 1 and L * x.itemsize >= ROW_PAIR_MIN_BYTES:
            rows.forward_pairs(x2, w, b, eps, centered, y2, mean64, rstd64)
        else:
            rows.forward(x2, G, S, w, b, eps, centered, y2, mean64, rstd64)
    if not keep:
        return (y if out is None else _deliver(y, out)), None
    saved = Saved(op, x2, mean64, rstd64, weight, _shape_of(bias), geometry, x.shape,
                  stat_shape=group_shape)
    return _deliver(y, out), saved


def _rows_backward(dy, saved, dx_out):
    _, R, L, G, S, C, centered = saved._geometry
    if saved._place is not None:
        return _gpu_gradients(saved._place, dx_out, *_cuda().rows_backward(
            dy, saved, saved._place.target(dx_out)))
    x2 = saved._x
    dy2 = _rows2d(dy, R, L)
    weight = saved._weight
    want_params = weight is not None or saved._bias_shape is not None
    nchunks = _nchunks(R, L)
    serial = R * L <= SERIAL_MAX_ELEMENTS
    pairs = not serial and G == 1 and S == 1 and L * x2.itemsize >= ROW_PAIR_MIN_BYTES
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
    part_dtype = x2.dtype if x_partials else np.float64
    dw_part = _scratch("dweight", shape, part_dtype)
    db_part = _scratch("dbias", shape, part_dtype)
    dx = np.empty(dy.shape, dy.dtype) if dx_out is None else _target(dx_out, dy)
    if R:
        w = weight if weight is not None and weight.ndim == 1 else _param(weight, C, x2.dtype, 1)
        dx2 = dx if dx.shape == (R, L) else dx.reshape(R, L)
        mean, rstd = saved._mean64, saved._rstd64
        tail = (w, centered, want_params, dx2, dw_part, db_part)
        if serial:
            rows.backward_serial(dy2, x2, mean, rstd, G, S, *tail)
        elif pairs:
            rows.backward_pairs(dy2, x2, mean, rstd, *tail)
        else:
            rows.backward(dy2, x2, mean, rstd, G, S, *tail)
    dweight = dbias = None
    if weight is not None:
        dweight = _merged(dw_part, x2.dtype, weight.shape)
    if saved._bias_shape is not None:
        dbias = _merged(db_part, x2.dtype, saved._bias_shape)
    return (dx if dx_out is None else _deliver(dx, dx_out)), dweight, dbias


def _shape_of(p):
    return None if p is None else tuple(p.shape)


def _merged(part, dtype, shape):
    """The (K, C) partial sums summed over K in float64, in dtype and the parameter's shape
    (one partial, as in every tiny call: its row as it is, which is what the sum gives,
    without NumPy's reduction machinery, ~0.5 us)."""
    if part.shape[0] == 1:
        total = part[0].astype(dtype)
    else:
        total = part.sum(axis=0, dtype=np.float64).astype(dtype)
    return total if len(shape) == 1 else total.reshape(shape)


# ---------------------------------------------------------------------------------------------
# channels geometry: batch_norm (and instance_norm with running statistics)

def _kernels(size):
    """The channels kernels: serial twins for inputs too small to pay for parallel regions."""
    return channels.SERIAL if size <= SERIAL_MAX_ELEMENTS else channels


def _channel_partials(x3, inv=None):
    """Per-channel float64 (mean, M2) of x*inv[c] (inv None: x) for a contiguous (N, C, S)
    array."""
    N, C, S = x3.shape
    if _slabs(x3, SLAB_MIN):
        nchunks = max(1, min(N, MAX_PARTIALS // C))
        pmean = np.empty((nchunks, C))
        pm2 = np.empty((nchunks, C))
        _kernels(x3.size).slab_partials(x3.reshape(N * C, S), N, C, inv,
                                        _slab_groups(x3.size, nchunks, C), pmean, pm2)
        scale = S
    else:
        M = C * S
        strip, rows_per_block = _column_blocks(M, x3.itemsize)
        nchunks = max(1, min(MAX_PARTIALS, -(-N // rows_per_block),
                             N * M // COLUMN_PARTIAL_MIN_ELEMENTS))
        pmean = _scratch("mean", (nchunks, M))
        pm2 = _scratch("m2", (nchunks, M))
        _kernels(x3.size).column_partials(x3.reshape(N, M),
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
    if size <= SERIAL_MAX_ELEMENTS:
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
    return min(M, max(1, COLUMN_STRIP_BYTES // itemsize))


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
        biggest = _kernels(x3.size).channel_absmax(x3)
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
    the part of the mean that mh drops is added back through b. Returns mh. The terms come from
    one kernel (affine_terms): in NumPy they were nine calls, ~20 us of a 0.26 ms (512, 2048)
    float32 forward."""
    N, C, S = x3.shape
    mh = np.empty(C, x3.dtype)
    a = np.empty(C, x3.dtype)
    b = np.empty(C, x3.dtype)
    channels.affine_terms(mean, rstd, 1.0 if weight is None else weight.reshape(C),
                          0.0 if bias is None else bias.reshape(C), mh, a, b)
    if not x3.size:
        return mh
    if _slabs(x3, SLAB_MIN):
        _kernels(x3.size).slab_affine(x3.reshape(N * C, S), C, mh, a, b, y3.reshape(N * C, S))
    else:
        _kernels(x3.size).column_affine(x3.reshape(N, C * S), _columns(mh, S), _columns(a, S),
                                        _columns(b, S), y3.reshape(N, C * S))
    return mh


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
    mh = mean.astype(x3.dtype)
    _kernels(x3.size).column_sums(dy3.reshape(N, M), x3.reshape(N, M), _columns(mh, S),
                                  COLUMN_SUMS_ROWS, strip, sdy, sdyx)
    sum_dy = np.empty(C)
    sum_dyx = np.empty(C)
    channels.total_sums(sdy, sdyx, mean, mh, sum_dy, sum_dyx)
    return sum_dy, sum_dyx


def _column_dx(dy3, x3, mean, rstd, k1, mean_dy, mean_dyx, dx3):
    """dx = k1*((dy - mean_dy) - xhat*mean_dyx) per channel of the column layout (float64
    parameters; the kernel rounds them to x's dtype and runs in it)."""
    N, C, S = x3.shape
    _kernels(x3.size).column_dx(dy3.reshape(N, C * S), x3.reshape(N, C * S), _columns(mean, S),
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


def _small_batch_norm(x, x3, weight, bias, eps, out):
    """(y, mean, rstd, var) by the fused serial kernel on x's contiguous (N, C, S) view x3
    (float64 statistics as _channel_stats gives them), or None where it declines (non-finite
    statistics: the general path rescales or propagates)."""
    N, C, _ = x3.shape
    x2 = x3.reshape(N, -1)
    y = _target(out, x)
    mean64 = np.empty(C)
    rstd64 = np.empty(C)
    var64 = np.empty(C)
    strip, rows_per_block = _column_blocks(x2.shape[1], x.itemsize)
    if channels.small_forward(x2, C, _param(weight, C, x.dtype, 1), _param(bias, C, x.dtype, 0),
                              eps, rows_per_block, COLUMN_SHIFT_MIN_ROWS, strip,
                              y.reshape(N, -1), mean64, rstd64, var64):
        return y, mean64, rstd64, var64
    return None


def _update_running(running_mean, running_var, mean, var_unbiased, momentum):
    """In place, both or neither: the new values are computed before either buffer is written."""
    new_mean = (1.0 - momentum) * running_mean + momentum * mean
    new_var = (1.0 - momentum) * running_var + momentum * var_unbiased
    running_mean[...] = new_mean
    running_var[...] = new_var


def _channels_forward(op, x, mean64, rstd64, weight, bias, out, geometry, public_shape,
                      place=_CPU, y=None, x3=None, keep=True):
    """Normalise (N, C, *) x with per-channel float64 mean/rstd (unless y is already
    computed); build the saved record when keep (the plain functions return (y, None)).
    x3: x's contiguous (N, C, S) view, when the caller already made it."""
    N, C = x.shape[:2]
    S = _prod(x.shape[2:])
    if place.gpu:
        x3 = place.x.reshape(N, C, S)
        y = _cuda().channels_affine(x3, mean64, rstd64, weight, bias,
                                    place.target(out)).reshape(x.shape)
        saved = _gpu_saved(op, place, geometry, mean64, rstd64, (C,), weight, bias, x3,
                           x.shape) if keep else None
        return place.deliver(y, out), saved
    if x3 is None:
        x3 = np.ascontiguousarray(x).reshape(N, C, S)
    mean = None
    if y is None:
        y = _target(out, x)
        mean = _channel_affine(x3, mean64, rstd64, weight, bias, y.reshape(N, C, S))
    if not keep:
        return _deliver(y, out), None
    if mean is None:
        mean = mean64.astype(x.dtype)
    stats = (np.broadcast_to(mean, public_shape),
             np.broadcast_to(rstd64.astype(x.dtype), public_shape))
    saved = Saved(op, x3, mean64, rstd64, weight, _shape_of(bias), geometry, x.shape,
                  stats=stats)
    return _deliver(y, out), saved


def _channels_backward(dy, saved, dx_out):
    _, training = saved._geometry
    x3 = saved._x
    N, C, S = x3.shape
    if saved._place is not None:
        return _gpu_gradients(saved._place, dx_out, *_cuda().channels_backward(
            dy.reshape(N, C, S), saved, training, saved._place.target(dx_out)))
    dy3 = np.ascontiguousarray(dy).reshape(N, C, S)
    mean, rstd = saved._mean64, saved._rstd64
    weight = saved._weight
    want_params = weight is not None or saved._bias_shape is not None
    w = _param(weight, C, np.float64, 1.0)
    target = _target(dx_out, dy)  # dx_out itself when C-contiguous: nothing to copy back
    dx = target.reshape(x3.shape)
    # An empty batch: no dx to write, and dweight = sum(dy*xhat), dbias = sum(dy) are sums of
    # no terms, exactly 0 (rstd is NaN there: rstd*0 gave NaN dweight).
    sum_dy = dw = np.zeros(C)
    if x3.size and _fused(x3, SLAB_MIN_BACKWARD):
        sum_dy = np.empty(C)
        dw = np.empty(C)
        channels.small_backward(dy3.reshape(N, C * S), x3.reshape(N, C * S), C, mean, rstd, w,
                                training, COLUMN_SUMS_ROWS, dx.reshape(N, C * S), sum_dy, dw)
    elif x3.size and _slabs(x3, SLAB_MIN_BACKWARD):
        nchunks = max(1, min(N, MAX_PARTIALS // C))
        sum_dy = np.empty(C)
        sum_dyx = np.empty(C)
        _kernels(x3.size).slab_backward(dy3.reshape(N * C, S), x3.reshape(N * C, S), N, C, mean,
                                        rstd, w, training, want_params,
                                        _slab_groups(x3.size, nchunks, C),
                                        np.empty((nchunks, C)), np.empty((nchunks, C)),
                                        dx.reshape(N * C, S), sum_dy, sum_dyx)
        dw = rstd * sum_dyx
    elif x3.size:
        sum_dy = sum_dyx = np.zeros(C)
        if training or want_params:
            sum_dy, sum_dyx = _column_sums(dy3, x3, mean)
        mean_dy = mean_dyx = np.zeros(C)
        if training:
            mean_dy = sum_dy / (N * S)
            mean_dyx = rstd * sum_dyx / (N * S)  # mean(dy*xhat)
        _column_dx(dy3, x3, mean, rstd, w * rstd, mean_dy, mean_dyx, dx)
        dw = rstd * sum_dyx
    dweight = dw.astype(x3.dtype) if weight is not None else None
    dbias = sum_dy.astype(x3.dtype) if saved._bias_shape is not None else None
    return _deliver(target, dx_out), dweight, dbias


def _check_channels_params(x, weight, bias, running_mean, running_var, use_batch_stats, place):
    C = x.shape[1]
    weight = V.optional_array(weight, "weight", (C,), x.dtype)
    bias = V.optional_array(bias, "bias", (C,), x.dtype)
    running_mean = V.running_buffer(running_mean, "running_mean", C, x.dtype, use_batch_stats)
    running_var = V.running_buffer(running_var, "running_var", C, x.dtype, use_batch_stats)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    return (place.param(weight, "weight"), place.param(bias, "bias"),
            place.param(running_mean, "running_mean", updated=use_batch_stats),
            place.param(running_var, "running_var", updated=use_batch_stats))


# ---------------------------------------------------------------------------------------------
# batch_norm

def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out, keep,
                device):
    x, place = _placement(x, device)
    V.ndim_at_least(x, "x", 2, "(N, C) or (N, C, *spatial)")
    training = bool(training)
    weight, bias, running_mean, running_var = _check_channels_params(
        x, weight, bias, running_mean, running_var, training, place)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    N, C = x.shape[:2]
    S = _prod(x.shape[2:])
    if training and N * S == 1:
        raise ValueError("Expected more than 1 value per channel when training, got input "
                         f"size {x.shape}")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False "
                         "(eval mode normalises with the running statistics)")
    if place.gpu:
        H = _cuda()
        if not training:
            mean64, rstd64 = H.running_stats(running_mean, running_var, eps)
        elif N * S == 0:
            mean64 = rstd64 = H.fill_nan(C)
        else:
            mean64, rstd64 = H.channel_stats(place.x.reshape(N, C, S), eps, momentum,
                                             running_mean, running_var)
            place.write_back()
        return _channels_forward("batch_norm", x, mean64, rstd64, weight, bias, out,
                                 ("channels", training), (C,), place, keep=keep)
    # One contiguous view for every kernel and the saved record (a copy only when x is not
    # C-contiguous).
    x3 = np.ascontiguousarray(x).reshape(N, C, S)
    y = None
    if training:
        if N * S == 0:
            mean64 = np.full(C, np.nan)
            rstd64 = np.full(C, np.nan)
        else:
            if _fused(x3, SLAB_MIN) and (
                    fused := _small_batch_norm(x, x3, weight, bias, eps, out)) is not None:
                y, mean64, rstd64, var64 = fused
            else:
                mean64, rstd64, var64 = _channel_stats(x3, eps)
            if running_mean is not None:
                with np.errstate(over="ignore"):  # beyond float range: inf
                    var_unbiased = var64 * (N * S / (N * S - 1))
                _update_running(running_mean, running_var, mean64, var_unbiased, momentum)
    else:
        mean64 = running_mean.astype(np.float64)
        rstd64 = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    return _channels_forward("batch_norm", x, mean64, rstd64, weight, bias, out,
                             ("channels", training), (C,), y=y, x3=x3, keep=keep)


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, out=None, device=None):
    """Batch normalization over (N, C) or (N, C, *spatial) input, as torch.nn.functional.batch_norm.

    Training mode normalises each channel with the batch's mean and biased variance and, when
    running buffers are given, updates them in place:
    running = (1 - momentum)*running + momentum*batch_stat (unbiased variance into running_var).
    Eval mode (training=False) normalises with running_mean and running_var.
    `out` may be x itself for an in-place result.
    """
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out,
                       keep=False, device=device)[0]


def batch_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None,
                       training=False, momentum=0.1, eps=1e-5, *, out=None, device=None):
    """`batch_norm` returning (y, saved); saved.mean and saved.rstd have shape (C,)."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out,
                       keep=True, device=device)


def batch_norm_backward(dy, saved, *, dx_out=None):
    """(dx, dweight, dbias) of a `batch_norm_forward`, in training or eval mode."""
    return _backward(dy, saved, ("batch_norm",), dx_out)


# ---------------------------------------------------------------------------------------------
# layer_norm and rms_norm

def _trailing_norm(op, x, normalized_shape, weight, bias, eps, out, keep, centered, device):
    shape = None
    if out is None and device is None and _device._env_device() is None:
        shape = V.plain_trailing_call(x, normalized_shape, weight, bias, eps, not centered)
    if shape is not None:  # a plain NumPy call, valid as it stands (see plain_trailing_call)
        place = _CPU
    else:
        x, place = _placement(x, device)
        shape = V.normalized_shape(normalized_shape)
        V.trailing_shape(x, shape)
        weight = place.param(V.optional_array(weight, "weight", shape, x.dtype), "weight")
        bias = place.param(V.optional_array(bias, "bias", shape, x.dtype), "bias")
        eps = V.eps(eps) if eps is not None or centered else eps
        out = V.out_array(out, x, may_alias=not keep)
    if eps is None:
        eps = _MACHINE_EPS[x.dtype.type]
    lead = x.shape[:x.ndim - len(shape)]
    L = shape[0] if len(shape) == 1 else _prod(shape)
    geometry = ("rows", x.size // L if L else _prod(lead), L, 1, 1, L, centered)
    return _rows_forward(op, x, geometry, weight, bias, eps, out, lead, keep, place)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None, device=None):
    """Layer normalization over the trailing `normalized_shape` dimensions, as
    torch.nn.functional.layer_norm: y = (x - mean)/sqrt(var + eps)*weight + bias."""
    return _trailing_norm("layer_norm", x, normalized_shape, weight, bias, eps, out, False,
                          True, device)[0]


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None,
                       device=None):
    """`layer_norm` returning (y, saved); saved.mean/rstd have shape
    x.shape[:-len(normalized_shape)]."""
    return _trailing_norm("layer_norm", x, normalized_shape, weight, bias, eps, out, True, True,
                          device)


def layer_norm_backward(dy, saved, *, dx_out=None):
    """(dx, dweight, dbias) of a `layer_norm_forward`."""
    return _backward(dy, saved, ("layer_norm",), dx_out)


def rms_norm(x, normalized_shape, weight=None, eps=None, *, out=None, device=None):
    """RMS normalization, as torch.nn.functional.rms_norm: y = x/sqrt(mean(x^2) + eps)*weight;
    eps=None means np.finfo(x.dtype).eps."""
    return _trailing_norm("rms_norm", x, normalized_shape, weight, None, eps, out, False,
                          False, device)[0]


def rms_norm_forward(x, normalized_shape, weight=None, eps=None, *, out=None, device=None):
    """`rms_norm` returning (y, saved); saved.mean is None, saved.rstd = 1/sqrt(mean(x^2)+eps)."""
    return _trailing_norm("rms_norm", x, normalized_shape, weight, None, eps, out, True, False,
                          device)


def rms_norm_backward(dy, saved, *, dx_out=None):
    """(dx, dweight) of an `rms_norm_forward`."""
    dx, dweight, _ = _backward(dy, saved, ("rms_norm",), dx_out)
    return dx, dweight


# ---------------------------------------------------------------------------------------------
# group_norm and instance_norm

def _group_norm(x, num_groups, weight, bias, eps, out, keep, device):
    x, place = _placement(x, device)
    V.ndim_at_least(x, "x", 2, "(N, C, *spatial)")
    num_groups = V.positive_int(num_groups, "num_groups")
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"num_groups ({num_groups}) must divide the number of channels "
                         f"({C}) of x")
    weight = place.param(V.optional_array(weight, "weight", (C,), x.dtype), "weight")
    bias = place.param(V.optional_array(bias, "bias", (C,), x.dtype), "bias")
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    S = _prod(x.shape[2:])
    geometry = ("rows", N * num_groups, C // num_groups * S, num_groups, S, C, True)
    return _rows_forward("group_norm", x, geometry, weight, bias, eps, out, (N, num_groups),
                         keep, place)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, out=None, device=None):
    """Group normalization, as torch.nn.functional.group_norm: the C channels of each sample
    split into num_groups groups, each normalised over its channels and spatial positions."""
    return _group_norm(x, num_groups, weight, bias, eps, out, False, device)[0]


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5, *, out=None, device=None):
    """`group_norm` returning (y, saved); saved.mean/rstd have shape (N, num_groups)."""
    return _group_norm(x, num_groups, weight, bias, eps, out, True, device)


def group_norm_backward(dy, saved, *, dx_out=None):
    """(dx, dweight, dbias) of a `group_norm_forward`."""
    return _backward(dy, saved, ("group_norm",), dx_out)


def _instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                   out, keep, device):
    x, place = _placement(x, device)
    V.ndim_at_least(x, "x", 3, "(N, C, *spatial)")
    use_input_stats = bool(use_input_stats)
    weight, bias, running_mean, running_var = _check_channels_params(
        x, weight, bias, running_mean, running_var, use_input_stats, place)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    N, C = x.shape[:2]
    S = _prod(x.shape[2:])
    if not use_input_stats:
        if running_mean is None:
            raise ValueError("running_mean and running_var are required when "
                             "use_input_stats=False")
        if place.gpu:
            mean64, rstd64 = _cuda().running_stats(running_mean, running_var, eps)
        else:
            mean64 = running_mean.astype(np.float64)
            rstd64 = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        return _channels_forward("instance_norm", x, mean64, rstd64, weight, bias, out,
                                 ("channels", False), (N, C), place, keep=keep)
    if S == 1:
        raise ValueError("Expected more than 1 spatial element when training, got input size "
                         f"{x.shape}")
    geometry = ("rows", N * C, S, C, S, C, True)
    y, saved = _rows_forward("instance_norm", x, geometry, weight, bias, eps, out, (N, C),
                             True, place)
    if place.gpu:
        if running_mean is not None and N * S:
            _cuda().instance_running_update(saved._mean64, saved._rstd64, N, C, S, eps,
                                            momentum, running_mean, running_var)
            place.write_back()
        return y, saved
    if running_mean is not None and N * S:
        # PyTorch's rule: the mean over the batch of each instance's statistics.
        var = 1.0 / saved._rstd64.reshape(N, C) ** 2 - eps
        _update_running(running_mean, running_var, saved._mean64.reshape(N, C).mean(axis=0),
                        (var * (S / (S - 1))).mean(axis=0), momentum)
    return y, saved


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None, device=None):
    """Instance normalization, as torch.nn.functional.instance_norm: each (sample, channel)
    normalised over its spatial positions; with use_input_stats=False, the running buffers."""
    return _instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum,
                          eps, out, False, device)[0]


def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None,
                          use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None,
                          device=None):
    """`instance_norm` returning (y, saved); saved.mean/rstd have shape (N, C)."""
    return _instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum,
                          eps, out, True, device)


def instance_norm_backward(dy, saved, *, dx_out=None):
    """(dx, dweight, dbias) of an `instance_norm_forward`."""
    return _backward(dy, saved, ("instance_norm",), dx_out)


# ---------------------------------------------------------------------------------------------

def _backward(dy, saved, ops, dx_out):
    if not isinstance(saved, Saved):
        raise TypeError(f"saved must be the record returned by {ops[0]}_forward, "
                        f"got {type(saved).__name__}")
    if saved.op not in ops:
        raise TypeError(f"saved comes from {saved.op}_forward, not {ops[0]}_forward")
    dy = V.grad_output(dy, saved._shape, saved._x.dtype)
    place = saved._place
    dy_on_gpu = not isinstance(dy, np.ndarray)
    if place is None and dy_on_gpu:
        raise ValueError("dy is on the GPU but the forward ran on the CPU: pass a NumPy dy")
    if place is not None and not place.host_io and not dy_on_gpu:
        raise ValueError("dy is a NumPy array but the forward ran on the GPU: pass a GPU dy")
    x_here = place is None or dy_on_gpu  # the saved x lives on dy's side
    dx_out = V.out_array(dx_out, dy, may_alias=False, name="dx_out", x_name="dy",
                         also=(saved._x, "the x saved by the forward pass") if x_here else None)
    if place is not None and not dy_on_gpu:
        dy = _device.to_device(np.ascontiguousarray(dy))
    if saved._geometry[0] == "rows":
        return _rows_backward(dy, saved, dx_out)
    return _channels_backward(dy, saved, dx_out)
