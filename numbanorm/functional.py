"""The functional API of the deep-learning ops: PyTorch's names, arguments and defaults, NumPy
(or GPU) arrays in and out.

Each op NAME has three entry points:

    NAME(x, ...)                 -> y
    NAME_forward(x, ...)         -> (y, saved)      saved: a `Saved` record for the backward
    NAME_backward(dy, saved)     -> (dx, dweight, dbias)   (rms_norm: (dx, dweight);
                                                           local_response_norm: dx)

Forwards take out= (y written there; in the plain functions it may be x itself), backwards
dx_out= (dx written there; it may overlap neither dy nor x). Reusing one output array across
calls saves the page faults of a fresh one: a fresh 64 MiB array costs 5-7 ms to fault in on
this project's 2-core machine, as much as the kernel that fills it.

Every op goes down once and comes back once:

    checks (numbanorm._validate) -> placement (numbanorm._placement: CPU, GPU or Dask)
    -> one call into the backend's host layer (numbanorm.cpu._host, numbanorm.cuda._host or
       numbanorm.dask._host, by geometry: rows_forward/rows_backward,
       channels_forward/channels_backward, window_forward/window_backward)
    -> kernels -> the result delivered (into out=, or as the caller's kind of array)

This module holds the checks' order and the ops' rules (which geometry, which errors, when the
running buffers change); the host layers hold views, buffers, thresholds and launches.

Dask arrays take the same path to the Dask backend (numbanorm.dask._host: lazy results; the
*_forward functions return (y, None) there: the Dask path is for inference).

GPU arrays (`__cuda_array_interface__`) run on the CUDA kernels, and every forward takes
`device=`: "cuda" sends NumPy input to the GPU and returns NumPy, "cpu" insists on the CPU,
None (default) follows the data or the NUMBANORM_DEVICE variable.
"""
import math

import numpy as np

from . import _device
from . import _validate as V
from ._docs import fill
from ._layout import ChannelsLast, channels_last
from ._placement import CPU, place
from ._saved import Saved

__all__ = [
    "Saved",
    "batch_norm", "batch_norm_forward", "batch_norm_backward",
    "layer_norm", "layer_norm_forward", "layer_norm_backward",
    "group_norm", "group_norm_forward", "group_norm_backward",
    "instance_norm", "instance_norm_forward", "instance_norm_backward",
    "rms_norm", "rms_norm_forward", "rms_norm_backward",
    "add_layer_norm", "add_layer_norm_forward", "add_layer_norm_backward",
    "add_rms_norm", "add_rms_norm_forward", "add_rms_norm_backward",
    "local_response_norm", "local_response_norm_forward", "local_response_norm_backward",
]

# rms_norm's default eps: the machine epsilon of x's dtype, float32's for 16-bit x (as
# torch.nn.functional.rms_norm in PyTorch 2.13, which takes the eps of the dtype it computes
# in: bfloat16's own, 0.0078, would swamp the variance of most rows).
_MACHINE_EPS = {t: float(np.finfo(t).eps) for t in (np.float32, np.float64)}


def _machine_eps(dtype):
    return _MACHINE_EPS.get(dtype.type) or _MACHINE_EPS[np.float32]


def _prod(shape):
    return int(math.prod(shape))


def _rows(op, x, geometry, weight, bias, eps, out, stat_shape, keep, where):
    """The rows geometry's forward on either backend: (y, saved or None)."""
    # (the placement's calls are skipped where they do nothing: a tiny layer_norm costs ~3 us
    # and each call ~0.07 us)
    gpu = where.gpu
    y, mean64, rstd64, x2 = where.host.rows_forward(
        where.x if gpu else x, geometry, weight, bias, eps,
        None if out is None else where.target(out))
    if out is not None or gpu:
        y = where.deliver(y, out)
    if not keep or where.lazy:
        return y, None
    return y, Saved(op, x2, mean64, rstd64, weight, bias, geometry, x.shape, where,
                    stat_shape)


def _channels(op, x, training, eps, momentum, running_mean, running_var, weight, bias, out,
              public_shape, keep, where):
    """The channels geometry's forward on either backend: (y, saved or None). Running buffers
    updated on the GPU for NumPy callers are copied back here."""
    y, mean64, rstd64, x3 = where.host.channels_forward(
        where.x if where.gpu else x, training, eps, momentum, running_mean, running_var, weight,
        bias, None if out is None else where.target(out))
    where.write_back()
    saved = None
    if keep and not where.lazy:
        saved = Saved(op, x3, mean64, rstd64, weight, bias, ("channels", training),
                      x.shape, where, (x.shape[1],), public_shape)
    return where.deliver(y, out), saved


def _affine_params(x, shape, weight, bias, where):
    """weight and bias (None or of `shape`) checked, one dtype for both (x's, or float32 for
    16-bit x), on the call's side."""
    weight = V.optional_array(weight, "weight", shape, x.dtype)
    bias = V.optional_array(bias, "bias", shape, x.dtype)
    if x.itemsize == 2:
        V.same_param_dtype(x.dtype, ((weight, "weight"), (bias, "bias")))
    return where.param(weight, "weight"), where.param(bias, "bias")


def _check_channels_params(x, weight, bias, running_mean, running_var, use_batch_stats, where):
    weight, bias, running_mean, running_var = V.channel_params(
        x, weight, bias, running_mean, running_var, use_batch_stats)
    return (where.param(weight, "weight"), where.param(bias, "bias"),
            where.param(running_mean, "running_mean", updated=use_batch_stats),
            where.param(running_var, "running_var", updated=use_batch_stats))


# ---------------------------------------------------------------------------------------------
# channel layouts: batch_norm, group_norm and instance_norm take channel_axis=1 (PyTorch's
# (N, C, *spatial)) or -1 ((N, *spatial, C)), and compute where the memory lies:
# channels-first memory on the rows and channels kernels, channels-last memory (NumPy's
# (N, H, W, C) images, or their transpose to (N, C, H, W), PyTorch's channels_last strides) on
# the channels-last kernels without a copy (numbanorm._layout.ChannelsLast). y keeps x's
# memory layout, dx dy's.

def _channel_input(x, where, channel_axis):
    """(xc, axis, last): x with its channel axis at 1 (a view; Dask: lazily transposed; a GPU
    array: its shape and dtype, for the checks), the public channel axis (1 or ndim - 1), and
    a ChannelsLast where x is computed channels-last (NumPy memory found so; GPU arrays,
    C-contiguous, when the channel axis is last), else None."""
    axis = V.channel_axis(channel_axis, x)
    if axis == 1:
        last = None
        if not where.gpu and not where.lazy and channels_last(x, 1):
            last = ChannelsLast(x.shape, 1)
        return x, 1, last
    if where.gpu:
        return _Moved(x, axis), axis, ChannelsLast(x.shape, axis)
    if where.lazy:
        return x.transpose(_to_first(x.ndim, axis)), axis, None
    return (np.moveaxis(x, axis, 1), axis,
            ChannelsLast(x.shape, axis) if channels_last(x, axis) else None)


class _Moved:
    """A GPU array's shape with its channel axis at 1, and its dtype: what the checks read."""

    def __init__(self, x, axis):
        self.shape = tuple(x.shape[a] for a in _to_first(x.ndim, axis))
        self.dtype, self.itemsize, self.ndim = x.dtype, x.dtype.itemsize, x.ndim


def _to_first(ndim, axis):
    return (0, axis) + tuple(a for a in range(1, ndim) if a != axis)


def _first(a, axis):
    """An array of the public shape with its channel axis at 1 (a view; None stays None)."""
    return a if a is None or axis == 1 else np.moveaxis(a, axis, 1)


def _public(a, axis, lazy=False):
    """A channels-first result back in the public shape (a view)."""
    if axis == 1:
        return a
    if lazy:
        return a.transpose(tuple(np.argsort(_to_first(a.ndim, axis))))
    return np.moveaxis(a, 1, axis)


def _last_target(where, last, out):
    """out's memory as the kernels' (N, S, C) array, or None (no out, or out laid out
    otherwise: the result is then copied into it)."""
    if out is None:
        return None
    t = where.target(out)
    return None if t is None else last.view(t)


def _last_deliver(where, last, yk, out, target):
    """A channels-last kernel result as the caller's array of the public shape."""
    y = last.public(yk)
    if where.gpu:
        return where.deliver(y, out)
    if out is None:
        return y
    if target is None:
        np.copyto(out, y)
    return out


def _batch_norm_last(op, x, last, training, eps, momentum, running_mean, running_var, weight,
                     bias, out, public_shape, keep, where):
    """batch_norm (or instance_norm on running statistics) of channels-last x: the channels
    geometry's (N*S, C) column layout (numbanorm.cpu.channels), whose statistics per column
    are the channels'."""
    N, S, C = last.kernel_shape
    xk = last.view(where.x if where.gpu else x)
    target = _last_target(where, last, out)
    y2, mean64, rstd64, x3 = where.host.channels_forward(
        xk.reshape(N * S, C), training, eps, momentum, running_mean, running_var, weight, bias,
        None if target is None else target.reshape(N * S, C))
    where.write_back()
    saved = None
    if keep:
        saved = Saved(op, x3, mean64, rstd64, weight, bias, ("channels", training), x.shape,
                      where, (C,), public_shape)
        saved._last = last
    return _last_deliver(where, last, y2, out, target), saved


def _group_norm_last(op, x, last, G, weight, bias, eps, out, stat_shape, where):
    """group_norm (instance_norm: G = C) of channels-last x (numbanorm.cpu.channels_last):
    (y, saved), the record's statistics per (image, group) in float64."""
    xk = last.view(where.x if where.gpu else x)
    target = _last_target(where, last, out)
    y3, mean64, rstd64 = where.host.channels_last_forward(xk, G, weight, bias, eps, target)
    saved = Saved(op, xk, mean64.reshape(-1), rstd64.reshape(-1), weight, bias, ("last", G),
                  x.shape, where, stat_shape)
    saved._last = last
    return _last_deliver(where, last, y3, out, target), saved


# ---------------------------------------------------------------------------------------------
# batch_norm

def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out, keep,
                device, channel_axis=1):
    x, where = place(x, device)
    V.ndim_at_least(x, "x", 2, "(N, C) or (N, C, *spatial)")
    xc, axis, last = _channel_input(x, where, channel_axis)
    training = bool(training)
    weight, bias, running_mean, running_var = _check_channels_params(
        xc, weight, bias, running_mean, running_var, training, where)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    N, C = xc.shape[:2]
    if training and N * _prod(xc.shape[2:]) == 1:
        raise ValueError("Expected more than 1 value per channel when training, got input "
                         f"size {xc.shape}")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False "
                         "(eval mode normalises with the running statistics)")
    if last is not None:
        return _batch_norm_last("batch_norm", x, last, training, eps, momentum, running_mean,
                                running_var, weight, bias, out, None, keep, where)
    y, saved = _channels("batch_norm", xc, training, eps, momentum, running_mean, running_var,
                         weight, bias, _first(out, axis), (C,), keep, where)
    return _moved(y, saved, x, axis, where)


def _moved(y, saved, x, axis, where):
    """(y, saved) of a channels-first computation of x with its channel axis moved to 1: y in
    x's shape, the record taking dy in x's shape."""
    if axis == 1:
        return y, saved
    if saved is not None:
        saved._axis = axis
        saved._shape = x.shape
    return _public(y, axis, where.lazy), saved


@fill
def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, out=None, device=None, channel_axis=1):
    """Batch normalization, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean)/sqrt(var + eps)*weight + bias`` per channel, the statistics over the batch
    and spatial positions (training), or from the running buffers (eval).

    Parameters
    ----------
    x : ndarray of shape (N, C) or ``(N, C, *spatial)``
        With channel_axis=-1, ``(N, *spatial, C)``.
    running_mean, running_var : ndarray of shape (C,), optional
        The running statistics: read in eval mode (required there); in training mode updated
        in place, ``running = (1 - momentum)*running + momentum*batch_statistic``, with the batch's
        unbiased variance going into running_var (as PyTorch).
    weight, bias : ndarray of shape (C,), optional
        The affine transform after the normalization (None: 1 and 0).
    training : bool, default False
        Batch statistics (True) or the running buffers (False).
    momentum : float, default 0.1
    eps : float, default 1e-5
        Added to the variance.
    %(out)s
    %(device)s
    %(channel_axis)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    batch_norm_forward, batch_norm_backward, BatchNorm2d

    Notes
    -----
    %(dtypes)s

    Examples
    --------
    >>> x = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])
    >>> running_mean, running_var = np.zeros(2), np.ones(2)
    >>> nbn.batch_norm(x, running_mean, running_var, training=True).round(4)
    array([[-1.2247, -1.2247],
           [ 0.    ,  0.    ],
           [ 1.2247,  1.2247]])
    >>> running_mean, running_var
    (array([0.3, 2. ]), array([ 1.3, 10.9]))
    """
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out,
                       keep=False, device=device, channel_axis=channel_axis)[0]


@fill
def batch_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None,
                       training=False, momentum=0.1, eps=1e-5, *, out=None, device=None,
                       channel_axis=1):
    """`batch_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, running_mean, running_var, weight, bias, training, momentum, eps
        As `batch_norm`.
    %(out)s
    %(device)s
    %(channel_axis)s

    %(returns_y)s
    %(saved_returns)s
        Both have shape (C,).

    %(raises)s

    See Also
    --------
    batch_norm, batch_norm_backward

    Examples
    --------
    >>> x = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])
    >>> y, saved = nbn.batch_norm_forward(x, training=True)
    >>> saved.mean, saved.rstd.round(4)
    (array([ 3., 20.]), array([0.6124, 0.1225]))
    """
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out,
                       keep=True, device=device, channel_axis=channel_axis)


@fill
def batch_norm_backward(dy, saved, *, dx_out=None):
    """The gradients of a `batch_norm_forward`, in training or eval mode.

    Parameters
    ----------
    %(backward_params)s

    %(channel_grads)s

    %(raises_backward)s

    See Also
    --------
    batch_norm_forward

    Examples
    --------
    >>> x = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])
    >>> y, saved = nbn.batch_norm_forward(x, None, None, np.ones(2), np.zeros(2), training=True)
    >>> dy = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    >>> dx, dweight, dbias = nbn.batch_norm_backward(dy, saved)
    >>> dx.round(4)
    array([[ 0.1021,  0.0204],
           [-0.2041, -0.0408],
           [ 0.1021,  0.0204]])
    >>> dweight.round(4), dbias
    (array([-1.2247,  1.2247]), array([1., 1.]))
    """
    return _backward(dy, saved, ("batch_norm",), dx_out)


# ---------------------------------------------------------------------------------------------
# layer_norm and rms_norm

def _trailing_norm(op, x, normalized_shape, weight, bias, eps, out, keep, centered, device):
    shape = None
    if out is None and device is None and _device._env_device() is None:
        shape = V.plain_trailing_call(x, normalized_shape, weight, bias, eps, not centered)
    if shape is not None:  # a plain NumPy call, valid as it stands (see plain_trailing_call)
        where = CPU
    else:
        x, where = place(x, device)
        shape = V.normalized_shape(normalized_shape)
        V.trailing_shape(x, shape)
        weight, bias = _affine_params(x, shape, weight, bias, where)
        eps = V.eps(eps) if eps is not None or centered else eps
        out = V.out_array(out, x, may_alias=not keep)
    if eps is None:
        eps = _machine_eps(x.dtype)
    lead = x.shape[:x.ndim - len(shape)]
    L = shape[0] if len(shape) == 1 else _prod(shape)
    geometry = ("rows", x.size // L if L else _prod(lead), L, 1, 1, L, centered)
    if where is CPU and out is None and not keep:
        # nothing to place, deliver or save: the host call alone (a tiny layer_norm takes
        # ~2.6 us, and the general path's extra frame ~0.1 us of it)
        return CPU.host.rows_forward(x, geometry, weight, bias, eps)[0], None
    return _rows(op, x, geometry, weight, bias, eps, out, lead, keep, where)


@fill
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None, device=None):
    """Layer normalization, as ``torch.nn.functional.layer_norm``.

    ``y = (x - mean)/sqrt(var + eps)*weight + bias``, the statistics over the trailing
    `normalized_shape` dimensions of each sample (biased variance).

    Parameters
    ----------
    x : ndarray of shape ``(..., *normalized_shape)``
    normalized_shape : int or tuple of int
        The trailing dimensions to normalise over.
    weight, bias : ndarray of shape normalized_shape, optional
        The elementwise affine transform (None: 1 and 0).
    eps : float, default 1e-5
    %(out)s
    %(device)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    layer_norm_forward, layer_norm_backward, add_layer_norm, LayerNorm

    Notes
    -----
    %(dtypes)s

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> nbn.layer_norm(x, 3).round(4)
    array([[-1.2247,  0.    ,  1.2247],
           [-1.2247,  0.    ,  1.2247]])
    """
    return _trailing_norm("layer_norm", x, normalized_shape, weight, bias, eps, out, False,
                          True, device)[0]


@fill
def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None,
                       device=None):
    """`layer_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, normalized_shape, weight, bias, eps
        As `layer_norm`.
    %(out)s
    %(device)s

    %(returns_y)s
    %(saved_returns)s
        Both have shape ``x.shape[:-len(normalized_shape)]``.

    %(raises)s

    See Also
    --------
    layer_norm, layer_norm_backward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, saved = nbn.layer_norm_forward(x, 3)
    >>> saved.mean, saved.rstd.round(4)
    (array([2., 4.]), array([1.2247, 0.6124]))
    """
    return _trailing_norm("layer_norm", x, normalized_shape, weight, bias, eps, out, True, True,
                          device)


@fill
def layer_norm_backward(dy, saved, *, dx_out=None):
    """The gradients of a `layer_norm_forward`.

    Parameters
    ----------
    %(backward_params)s

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight, dbias : ndarray of shape normalized_shape or None
        The parameters' dtype; None where the forward had no weight (bias).

    %(raises_backward)s

    See Also
    --------
    layer_norm_forward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, saved = nbn.layer_norm_forward(x, 3, np.ones(3), np.zeros(3))
    >>> dx, dweight, dbias = nbn.layer_norm_backward(np.array([[1.0, 0.0, 0.0]] * 2), saved)
    >>> dx.round(4)
    array([[ 0.2041, -0.4082,  0.2041],
           [ 0.1021, -0.2041,  0.1021]])
    >>> dweight.round(4), dbias
    (array([-2.4495,  0.    ,  0.    ]), array([2., 0., 0.]))
    """
    return _backward(dy, saved, ("layer_norm",), dx_out)


@fill
def rms_norm(x, normalized_shape, weight=None, eps=None, *, out=None, device=None):
    """RMS normalization, as ``torch.nn.functional.rms_norm``.

    ``y = x/sqrt(mean(x^2) + eps)*weight``, the mean over the trailing `normalized_shape`
    dimensions of each sample.

    Parameters
    ----------
    x : ndarray of shape ``(..., *normalized_shape)``
    normalized_shape : int or tuple of int
        The trailing dimensions to normalise over.
    weight : ndarray of shape normalized_shape, optional
        The elementwise scale (None: 1).
    eps : float, optional
        None (default): ``np.finfo(x.dtype).eps`` (float32's for 16-bit x), as PyTorch.
    %(out)s
    %(device)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    rms_norm_forward, rms_norm_backward, add_rms_norm, RMSNorm

    Notes
    -----
    %(dtypes)s

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> nbn.rms_norm(x, 3).round(4)
    array([[0.4629, 0.9258, 1.3887],
           [0.4629, 0.9258, 1.3887]])
    """
    return _trailing_norm("rms_norm", x, normalized_shape, weight, None, eps, out, False,
                          False, device)[0]


@fill
def rms_norm_forward(x, normalized_shape, weight=None, eps=None, *, out=None, device=None):
    """`rms_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, normalized_shape, weight, eps
        As `rms_norm`.
    %(out)s
    %(device)s

    %(returns_y)s
    saved : Saved
        What the backward needs. saved.mean is None; saved.rstd = 1/sqrt(mean(x^2) + eps),
        of shape ``x.shape[:-len(normalized_shape)]``.

    %(raises)s

    See Also
    --------
    rms_norm, rms_norm_backward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, saved = nbn.rms_norm_forward(x, 3)
    >>> saved.rstd.round(4)
    array([0.4629, 0.2315])
    """
    return _trailing_norm("rms_norm", x, normalized_shape, weight, None, eps, out, True, False,
                          device)


@fill
def rms_norm_backward(dy, saved, *, dx_out=None):
    """The gradients of an `rms_norm_forward`.

    Parameters
    ----------
    %(backward_params)s

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight : ndarray of shape normalized_shape or None
        The weight's dtype; None where the forward had no weight.

    %(raises_backward)s

    See Also
    --------
    rms_norm_forward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, saved = nbn.rms_norm_forward(x, 3, np.ones(3))
    >>> dx, dweight = nbn.rms_norm_backward(np.array([[1.0, 0.0, 0.0]] * 2), saved)
    >>> dx.round(4)
    array([[ 0.4298, -0.0661, -0.0992],
           [ 0.2149, -0.0331, -0.0496]])
    >>> dweight.round(4)
    array([0.9258, 0.    , 0.    ])
    """
    dx, dweight, _ = _backward(dy, saved, ("rms_norm",), dx_out)
    return dx, dweight


# ---------------------------------------------------------------------------------------------
# fused residual add + layer_norm / rms_norm: h = x + residual, y = norm(h) in one pass

def _add_norm(op, x, residual, normalized_shape, weight, bias, eps, out, residual_out,
              residual_dtype, keep, centered, device):
    x, where = place(x, device)
    if where.lazy:
        raise TypeError(f"{op} takes NumPy or GPU arrays, not Dask ones (its outputs are two "
                        f"arrays): add x and residual lazily, then call {op[4:]}")
    residual, h_dtype = V.residual_args(x, residual, residual_dtype)
    shape = V.normalized_shape(normalized_shape)
    V.trailing_shape(x, shape)
    weight, bias = _affine_params(x, shape, weight, bias, where)
    eps = V.eps(eps) if eps is not None or centered else eps
    if eps is None:
        eps = _machine_eps(x.dtype)
    V.add_outputs(out, residual_out, x, residual, h_dtype, plain=not keep)
    L = _prod(shape)
    R = _prod(x.shape) // L if L else _prod(x.shape[:x.ndim - len(shape)])
    host = where.host
    if where.gpu:
        yt, ht = where.target(out), where.target(residual_out)
        y2, h2, mean64, rstd64, (a2, b2) = host.add_rows_forward(
            where.x.reshape(R, L), where.param(residual, "residual").reshape(R, L), weight,
            bias, eps, centered, None if yt is None else yt.reshape(R, L),
            None if ht is None else ht.reshape(R, L), h_dtype)
        y = where.deliver(y2.reshape(x.shape), out)
        h = where.deliver(h2.reshape(x.shape), residual_out)
    else:
        x2, r2 = host._rows2d(x, R, L), host._rows2d(residual, R, L)
        yt = None if out is None or not out.flags.c_contiguous else out.reshape(R, L)
        ht = (None if residual_out is None or not residual_out.flags.c_contiguous
              else residual_out.reshape(R, L))
        y2, h2, mean64, rstd64, (a2, b2) = host.add_rows_forward(x2, r2, weight, bias, eps,
                                                                 centered, yt, ht, h_dtype)
        y, h = y2.reshape(x.shape), h2.reshape(x.shape)
        if out is not None and yt is None:
            np.copyto(out, y)
        if residual_out is not None and ht is None:
            np.copyto(residual_out, h)
        y = y if out is None else out
        h = h if residual_out is None else residual_out
    saved = None
    if keep:
        geometry = ("add", R, L, b2, residual.dtype, x.dtype, h_dtype, centered)
        saved = Saved(op, a2, mean64, rstd64, weight, bias, geometry, tuple(x.shape), where,
                      tuple(x.shape[:x.ndim - len(shape)]))
    return y, h, saved


def _add_backward(dy, saved, dh, dx_out, op):
    V.saved_record(saved, Saved, (op,))
    _, R, L, _, _, x_dtype, h_dtype, _ = saved._geometry
    dy = V.grad_output(dy, saved._shape, x_dtype)
    where = saved._place
    V.dy_side(dy, where)
    if dh is not None:
        dh = V.array(dh, "dh")
        if tuple(dh.shape) != tuple(dy.shape):
            raise ValueError(f"dh must have h's shape {tuple(dy.shape)}, got {tuple(dh.shape)}")
        if dh.dtype != h_dtype:
            raise TypeError(f"dh must have h's dtype {h_dtype}, got {dh.dtype}")
        V.dy_side(dh, where)
    x_here = not where.gpu or not isinstance(dy, np.ndarray)
    dx_out = V.out_array(dx_out, dy, may_alias=False, name="dx_out", x_name="dy",
                         also=(saved._x, "the x saved by the forward pass") if x_here else None)
    if dx_out is not None and dh is not None and V._overlap(dx_out, dh, where.gpu and x_here)[0]:
        raise ValueError("dx_out overlaps dh: pass a separate array")
    host = where.host
    if where.gpu:
        dy2 = where.grad_input(dy).reshape(R, L)
        dh2 = None if dh is None else where.grad_input(dh).reshape(R, L)
        t = where.target(dx_out)
        dx2, dres2, dweight, dbias = host.add_rows_backward(
            dy2, saved, dh2, None if t is None else t.reshape(R, L))
        dx = where.deliver(dx2.reshape(dy.shape), dx_out)
        dres = dx if dres2 is dx2 else where.deliver(dres2.reshape(dy.shape), None)
        return dx, dres, where.gradient(dweight), where.gradient(dbias)
    dy2 = host._rows2d(dy, R, L)
    dh2 = None if dh is None else host._rows2d(dh, R, L)
    t = None if dx_out is None or not dx_out.flags.c_contiguous else dx_out.reshape(R, L)
    dx2, dres2, dweight, dbias = host.add_rows_backward(dy2, saved, dh2, t)
    dx = dx2.reshape(dy.shape)
    if dx_out is not None:
        if t is None:
            np.copyto(dx_out, dx)
        dres = dx_out if dres2 is dx2 else dres2.reshape(dy.shape)
        dx = dx_out
    else:
        dres = dx if dres2 is dx2 else dres2.reshape(dy.shape)
    return dx, dres, dweight, dbias


@fill
def add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None,
                   residual_out=None, residual_dtype=None, device=None):
    """Fused residual add + layer norm, the step of a pre-norm Transformer block.

    ``h = x + residual`` and ``y = layer_norm(h)``, by one read of x and residual and one write of y
    and h (no pass for the sum alone). Liger's, vLLM's and flash-attn's fused forms.

    Parameters
    ----------
    x, residual : ndarray of one shape ``(..., *normalized_shape)``
        NumPy or GPU arrays; residual has x's dtype, or residual_dtype's.
    normalized_shape, weight, bias, eps
        As `layer_norm`.
    out, residual_out : ndarray, optional
        Where y (x's dtype) and h (residual_dtype, default x's) go. ``out=x`` together with
        ``residual_out=residual`` is the in-place pattern of vLLM and FlashInfer: y over x, h
        over the residual stream, in one call. Each may be exactly x or exactly residual,
        never a partial overlap, and never the same memory as the other.
    residual_dtype : dtype, optional
        flash-attn's residual_in_fp32: float32 for float16/bfloat16 x stores h in float32.
        The statistics always come from the sum in the dtype x computes in (float32 for
        16-bit x), before h is rounded.
    %(device)s

    %(returns_y)s
    h : ndarray
        x + residual: x's shape, residual_dtype (default x's dtype).

    %(raises)s

    See Also
    --------
    add_layer_norm_forward, add_layer_norm_backward, LayerNorm

    Notes
    -----
    Dask arrays are refused (the fusion is a memory-traffic saving a lazy graph would not
    keep).

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, h = nbn.add_layer_norm(x, np.ones_like(x), 3)
    >>> h
    array([[2., 3., 4.],
           [3., 5., 7.]])
    >>> y.round(4)
    array([[-1.2247,  0.    ,  1.2247],
           [-1.2247,  0.    ,  1.2247]])
    """
    y, h, _ = _add_norm("add_layer_norm", x, residual, normalized_shape, weight, bias, eps, out,
                        residual_out, residual_dtype, False, True, device)
    return y, h


@fill
def add_layer_norm_forward(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                           out=None, residual_out=None, residual_dtype=None, device=None):
    """`add_layer_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, residual, normalized_shape, weight, bias, eps, residual_dtype
        As `add_layer_norm`.
    out, residual_out : ndarray, optional
        As `add_layer_norm`, but neither may be x's or residual's memory (the backward reads
        them).
    %(device)s

    Returns
    -------
    y, h : ndarray
        As `add_layer_norm`.
    saved : Saved
        What the backward needs; saved.mean and saved.rstd have x's leading shape.

    %(raises)s

    See Also
    --------
    add_layer_norm, add_layer_norm_backward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, h, saved = nbn.add_layer_norm_forward(x, np.ones_like(x), 3)
    >>> saved.mean
    array([3., 5.])
    """
    return _add_norm("add_layer_norm", x, residual, normalized_shape, weight, bias, eps, out,
                     residual_out, residual_dtype, True, True, device)


@fill
def add_layer_norm_backward(dy, saved, dh=None, *, dx_out=None):
    """The gradients of an `add_layer_norm_forward`.

    The gradient of the unrounded sum s = x + residual: dx = d layer_norm/ds + dh, by one
    read of dy, h and dh (of x and residual where h was rounded to 16 bits).

    Parameters
    ----------
    dy : ndarray
        The gradient of y: x's shape and dtype.
    %(saved)s
    dh : ndarray, optional
        The gradient flowing into the residual stream h from later blocks (h's shape and
        dtype); None: 0.
    %(dx_out)s

    Returns
    -------
    dx : ndarray
        x's dtype.
    dresidual : ndarray
        dx itself where the residual has x's dtype (as flash-attn returns it), else an array
        of the residual's dtype with the same values.
    dweight, dbias : ndarray of shape normalized_shape or None
        The parameters' dtype; None where absent.

    %(raises_backward)s

    See Also
    --------
    add_layer_norm_forward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, h, saved = nbn.add_layer_norm_forward(x, np.ones_like(x), 3)
    >>> dx, dresidual, dweight, dbias = nbn.add_layer_norm_backward(
    ...     np.array([[1.0, 0.0, 0.0]] * 2), saved, dh=np.ones_like(x))
    >>> dx.round(4)
    array([[1.2041, 0.5918, 1.2041],
           [1.1021, 0.7959, 1.1021]])
    >>> dresidual is dx
    True
    """
    return _add_backward(dy, saved, dh, dx_out, "add_layer_norm")


@fill
def add_rms_norm(x, residual, normalized_shape, weight=None, eps=None, *, out=None,
                 residual_out=None, residual_dtype=None, device=None):
    """Fused residual add + RMS norm: h = x + residual, y = rms_norm(h).

    One read of x and residual and one write of y and h, as `add_layer_norm`.

    Parameters
    ----------
    x, residual : ndarray of one shape ``(..., *normalized_shape)``
        NumPy or GPU arrays; residual has x's dtype, or residual_dtype's.
    normalized_shape, weight
        As `rms_norm`.
    eps : float, optional
        None: x's machine epsilon (float32's for 16-bit x), as `rms_norm`.
    out, residual_out, residual_dtype
        As `add_layer_norm`.
    %(device)s

    %(returns_y)s
    h : ndarray
        x + residual: x's shape, residual_dtype (default x's dtype).

    %(raises)s

    See Also
    --------
    add_rms_norm_forward, add_rms_norm_backward, RMSNorm

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, h = nbn.add_rms_norm(x, np.ones_like(x), 3)
    >>> y.round(4)
    array([[0.6433, 0.9649, 1.2865],
           [0.5704, 0.9506, 1.3308]])
    """
    y, h, _ = _add_norm("add_rms_norm", x, residual, normalized_shape, weight, None, eps, out,
                        residual_out, residual_dtype, False, False, device)
    return y, h


@fill
def add_rms_norm_forward(x, residual, normalized_shape, weight=None, eps=None, *, out=None,
                         residual_out=None, residual_dtype=None, device=None):
    """`add_rms_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, residual, normalized_shape, weight, eps, residual_dtype
        As `add_rms_norm`.
    out, residual_out : ndarray, optional
        As `add_layer_norm_forward`.
    %(device)s

    Returns
    -------
    y, h : ndarray
        As `add_rms_norm`.
    saved : Saved
        What the backward needs; saved.mean is None, saved.rstd has x's leading shape.

    %(raises)s

    See Also
    --------
    add_rms_norm, add_rms_norm_backward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, h, saved = nbn.add_rms_norm_forward(x, np.ones_like(x), 3)
    >>> saved.rstd.round(4)
    array([0.3216, 0.1901])
    """
    return _add_norm("add_rms_norm", x, residual, normalized_shape, weight, None, eps, out,
                     residual_out, residual_dtype, True, False, device)


@fill
def add_rms_norm_backward(dy, saved, dh=None, *, dx_out=None):
    """The gradients of an `add_rms_norm_forward` (see `add_layer_norm_backward`).

    Parameters
    ----------
    dy : ndarray
        The gradient of y: x's shape and dtype.
    %(saved)s
    dh : ndarray, optional
        The gradient flowing into h from later blocks; None: 0.
    %(dx_out)s

    Returns
    -------
    dx : ndarray
        x's dtype.
    dresidual : ndarray
        dx itself where the residual has x's dtype, else the residual's dtype.
    dweight : ndarray of shape normalized_shape or None
        None where the forward had no weight.

    %(raises_backward)s

    See Also
    --------
    add_rms_norm_forward

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y, h, saved = nbn.add_rms_norm_forward(x, np.ones_like(x), 3, np.ones(3))
    >>> dx, dresidual, dweight = nbn.add_rms_norm_backward(np.ones_like(x), saved)
    >>> dx.round(4)
    array([[ 0.122 ,  0.0222, -0.0776],
           [ 0.087 ,  0.0183, -0.0504]])
    """
    dx, dres, dweight, _ = _add_backward(dy, saved, dh, dx_out, "add_rms_norm")
    return dx, dres, dweight


# ---------------------------------------------------------------------------------------------
# group_norm and instance_norm

def _group_norm(x, num_groups, weight, bias, eps, out, keep, device, channel_axis=1):
    x, where = place(x, device)
    V.ndim_at_least(x, "x", 2, "(N, C, *spatial)")
    xc, axis, last = _channel_input(x, where, channel_axis)
    num_groups = V.positive_int(num_groups, "num_groups")
    N, C = xc.shape[:2]
    if C % num_groups:
        raise ValueError(f"num_groups ({num_groups}) must divide the number of channels "
                         f"({C}) of x")
    weight, bias = _affine_params(xc, (C,), weight, bias, where)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    if last is not None:
        y, saved = _group_norm_last("group_norm", x, last, num_groups, weight, bias, eps, out,
                                    (N, num_groups), where)
        return y, saved if keep else None
    S = _prod(xc.shape[2:])
    geometry = ("rows", N * num_groups, C // num_groups * S, num_groups, S, C, True)
    y, saved = _rows("group_norm", xc, geometry, weight, bias, eps, _first(out, axis),
                     (N, num_groups), keep, where)
    return _moved(y, saved, x, axis, where)


@fill
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, out=None, device=None,
               channel_axis=1):
    """Group normalization, as ``torch.nn.functional.group_norm``.

    The C channels of each sample are split into num_groups groups of consecutive channels;
    each group is normalised over its channels and spatial positions, then the per-channel
    affine transform applies.

    Parameters
    ----------
    x : ndarray of shape ``(N, C, *spatial)``
        With channel_axis=-1, ``(N, *spatial, C)``.
    num_groups : int
        Divides C.
    weight, bias : ndarray of shape (C,), optional
        None: 1 and 0.
    eps : float, default 1e-5
    %(out)s
    %(device)s
    %(channel_axis)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    group_norm_forward, group_norm_backward, GroupNorm

    Notes
    -----
    %(dtypes)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(1, 4, 2)
    >>> nbn.group_norm(x, 2).round(4)
    array([[[-1.3416, -0.4472],
            [ 0.4472,  1.3416],
            [-1.3416, -0.4472],
            [ 0.4472,  1.3416]]])

    Channels last: the same numbers from ``(N, *spatial, C)`` memory, without a copy.

    >>> x_last = np.ascontiguousarray(x.transpose(0, 2, 1))
    >>> np.allclose(nbn.group_norm(x_last, 2, channel_axis=-1),
    ...             nbn.group_norm(x, 2).transpose(0, 2, 1))
    True
    """
    return _group_norm(x, num_groups, weight, bias, eps, out, False, device, channel_axis)[0]


@fill
def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5, *, out=None, device=None,
                       channel_axis=1):
    """`group_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, num_groups, weight, bias, eps
        As `group_norm`.
    %(out)s
    %(device)s
    %(channel_axis)s

    %(returns_y)s
    %(saved_returns)s
        Both have shape (N, num_groups).

    %(raises)s

    See Also
    --------
    group_norm, group_norm_backward

    Examples
    --------
    >>> x = np.arange(8.0).reshape(1, 4, 2)
    >>> y, saved = nbn.group_norm_forward(x, 2)
    >>> saved.mean
    array([[1.5, 5.5]])
    """
    return _group_norm(x, num_groups, weight, bias, eps, out, True, device, channel_axis)


@fill
def group_norm_backward(dy, saved, *, dx_out=None):
    """The gradients of a `group_norm_forward`.

    Parameters
    ----------
    %(backward_params)s

    %(channel_grads)s

    %(raises_backward)s

    See Also
    --------
    group_norm_forward

    Examples
    --------
    >>> x = np.arange(8.0).reshape(1, 4, 2)
    >>> y, saved = nbn.group_norm_forward(x, 2, np.ones(4), np.zeros(4))
    >>> dx, dweight, dbias = nbn.group_norm_backward(y, saved)
    >>> dweight.round(4), dbias.round(4)
    (array([2., 2., 2., 2.]), array([-1.7888,  1.7888, -1.7888,  1.7888]))
    """
    return _backward(dy, saved, ("group_norm",), dx_out)


def _instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                   out, keep, device, channel_axis=1):
    x, where = place(x, device)
    V.ndim_at_least(x, "x", 3, "(N, C, *spatial)")
    xc, axis, last = _channel_input(x, where, channel_axis)
    use_input_stats = bool(use_input_stats)
    weight, bias, running_mean, running_var = _check_channels_params(
        xc, weight, bias, running_mean, running_var, use_input_stats, where)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    N, C = xc.shape[:2]
    S = _prod(xc.shape[2:])
    if not use_input_stats:
        if running_mean is None:
            raise ValueError("running_mean and running_var are required when "
                             "use_input_stats=False")
        if last is not None:
            return _batch_norm_last("instance_norm", x, last, False, eps, momentum,
                                    running_mean, running_var, weight, bias, out, (N, C), keep,
                                    where)
        y, saved = _channels("instance_norm", xc, False, eps, momentum, running_mean,
                             running_var, weight, bias, _first(out, axis), (N, C), keep, where)
        return _moved(y, saved, x, axis, where)
    if S == 1:
        raise ValueError("Expected more than 1 spatial element when training, got input size "
                         f"{xc.shape}")
    if last is not None:
        y, saved = _group_norm_last("instance_norm", x, last, C, weight, bias, eps, out, (N, C),
                                    where)
    else:
        geometry = ("rows", N * C, S, C, S, C, True)
        y, saved = _rows("instance_norm", xc, geometry, weight, bias, eps, _first(out, axis),
                         (N, C), True, where)
        y, saved = _moved(y, saved, x, axis, where)
    if running_mean is not None and N * S and saved is not None:  # an empty batch leaves them
        where.host.instance_running_update(saved._mean64, saved._rstd64, N, C, S, eps, momentum,
                                           running_mean, running_var)
        where.write_back()
    return y, saved


@fill
def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None, device=None,
                  channel_axis=1):
    """Instance normalization, as ``torch.nn.functional.instance_norm``.

    Each (sample, channel) is normalised over its spatial positions; with
    use_input_stats=False, with the running buffers instead.

    Parameters
    ----------
    x : ndarray of shape ``(N, C, *spatial)``, at least one spatial dimension
        With channel_axis=-1, ``(N, *spatial, C)``.
    running_mean, running_var : ndarray of shape (C,), optional
        Updated in place from the batch's mean over samples of each channel's statistics when
        use_input_stats (as PyTorch); read when not (required then).
    weight, bias : ndarray of shape (C,), optional
        None: 1 and 0.
    use_input_stats : bool, default True
    momentum : float, default 0.1
    eps : float, default 1e-5
    %(out)s
    %(device)s
    %(channel_axis)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    instance_norm_forward, instance_norm_backward, InstanceNorm2d

    Notes
    -----
    %(dtypes)s

    Examples
    --------
    >>> x = np.array([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 5.0, 5.0]]])
    >>> nbn.instance_norm(x).round(4)
    array([[[-1.3416, -0.4472,  0.4472,  1.3416],
            [-1.    , -1.    ,  1.    ,  1.    ]]])
    """
    return _instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum,
                          eps, out, False, device, channel_axis)[0]


@fill
def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None,
                          use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None,
                          device=None, channel_axis=1):
    """`instance_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps
        As `instance_norm`.
    %(out)s
    %(device)s
    %(channel_axis)s

    %(returns_y)s
    %(saved_returns)s
        Both have shape (N, C).

    %(raises)s

    See Also
    --------
    instance_norm, instance_norm_backward

    Examples
    --------
    >>> x = np.array([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 5.0, 5.0]]])
    >>> y, saved = nbn.instance_norm_forward(x)
    >>> saved.mean, saved.rstd.round(4)
    (array([[2.5, 2.5]]), array([[0.8944, 0.4   ]]))
    """
    return _instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum,
                          eps, out, True, device, channel_axis)


@fill
def instance_norm_backward(dy, saved, *, dx_out=None):
    """The gradients of an `instance_norm_forward`.

    Parameters
    ----------
    %(backward_params)s

    %(channel_grads)s

    %(raises_backward)s

    See Also
    --------
    instance_norm_forward

    Examples
    --------
    >>> x = np.array([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 5.0, 5.0]]])
    >>> y, saved = nbn.instance_norm_forward(x)
    >>> dx, _, _ = nbn.instance_norm_backward(np.array([[[1.0, 0, 0, 0], [1.0, 0, 0, 0]]]), saved)
    >>> dx[0, 0].round(4)
    array([ 0.2683, -0.3578, -0.0894,  0.1789])
    """
    return _backward(dy, saved, ("instance_norm",), dx_out)


# ---------------------------------------------------------------------------------------------
# local_response_norm

def _local_response_norm(x, size, alpha, beta, k, out, keep, device):
    x, where = place(x, device)
    if x.ndim < 3:
        raise ValueError("x must have at least 3 dimensions (N, C, *spatial), as PyTorch's "
                         f"'Expected 3D or higher dimensionality input', got shape {x.shape}")
    size = V.positive_int(size, "size")
    alpha = V.finite_real(alpha, "alpha")
    beta = V.finite_real(beta, "beta")
    k = V.finite_real(k, "k")
    out = V.out_array(out, x, may_alias=not keep)
    if where.lazy:  # Dask: blocks with their neighbouring channels, lazily; no saved record
        return where.host.window_forward(x, size, alpha, beta, k), None
    N, C = x.shape[:2]
    S = _prod(x.shape[2:])
    x3 = (where.x if where.gpu else np.ascontiguousarray(x)).reshape(N, C, S)
    saved = Saved("local_response_norm", x3, None, None, None, None,
                  ("window", size, alpha, beta, k), x.shape, where, None) if keep else None
    if x.size == 0 and out is None and not where.host_io:
        return (where.like if where.gpu else x), saved  # PyTorch returns empty input itself
    target = where.target(out)
    y3 = where.host.window_forward(x3, size, alpha, beta, k,
                                   None if target is None else target.reshape(N, C, S))
    return where.deliver(y3.reshape(x.shape), out), saved


@fill
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0, *, out=None, device=None):
    """Local response normalization across channels, as
    ``torch.nn.functional.local_response_norm``.

    ``y[c] = x[c]/(k + alpha/size*sum(x[c']^2))^beta`` over ``c'`` in
    ``[c - size//2, c + (size - 1)//2]``, zero padded; the divisor is always `size`. The
    window sums are O(1) per value and never subtract (no cancellation).

    Parameters
    ----------
    x : ndarray of shape ``(N, C, *spatial)``, at least 3 dimensions
        An empty x is returned as it is (PyTorch returns the same tensor). A Dask x gives a
        lazy y (each block with its neighbouring channels; the NumPy result bit for bit).
    size : int
        Channels in the window, at least 1.
    alpha : float, default 1e-4
    beta : float, default 0.75
    k : float, default 1.0
    %(out)s
    %(device)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    local_response_norm_forward, local_response_norm_backward, LocalResponseNorm

    Examples
    --------
    >>> x = np.array([[[1.0], [2.0], [3.0]]])
    >>> nbn.local_response_norm(x, 2, alpha=1.0, beta=1.0).round(4)
    array([[[0.6667],
            [0.5714],
            [0.4   ]]])
    """
    return _local_response_norm(x, size, alpha, beta, k, out, False, device)[0]


@fill
def local_response_norm_forward(x, size, alpha=1e-4, beta=0.75, k=1.0, *, out=None,
                                device=None):
    """`local_response_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, size, alpha, beta, k
        As `local_response_norm`.
    %(out)s
    %(device)s

    %(returns_y)s
    saved : Saved
        What the backward needs; saved.mean and saved.rstd are None.

    %(raises)s

    See Also
    --------
    local_response_norm, local_response_norm_backward

    Examples
    --------
    >>> x = np.array([[[1.0], [2.0], [3.0]]])
    >>> y, saved = nbn.local_response_norm_forward(x, 2, alpha=1.0, beta=1.0)
    >>> saved.op
    'local_response_norm'
    """
    return _local_response_norm(x, size, alpha, beta, k, out, True, device)


@fill
def local_response_norm_backward(dy, saved, *, dx_out=None):
    """The gradient of a `local_response_norm_forward`.

    Parameters
    ----------
    %(backward_params)s

    Returns
    -------
    dx : ndarray
        x's shape and dtype.

    %(raises_backward)s

    See Also
    --------
    local_response_norm_forward

    Examples
    --------
    >>> x = np.array([[[1.0], [2.0], [3.0]]])
    >>> y, saved = nbn.local_response_norm_forward(x, 2, alpha=1.0, beta=1.0)
    >>> nbn.local_response_norm_backward(np.ones_like(y), saved).round(4)
    array([[[ 0.059 ],
            [-0.1475],
            [-0.0267]]])
    """
    return _backward(dy, saved, ("local_response_norm",), dx_out)[0]


def _window_backward(host, dy, saved, dx):
    """The window geometry's backward on either backend: (dx, None, None)."""
    _, size, alpha, beta, k = saved._geometry
    x3 = saved._x
    dy3 = (np.ascontiguousarray(dy) if isinstance(dy, np.ndarray) else dy).reshape(x3.shape)
    dx3 = host.window_backward(dy3, x3, size, alpha, beta, k,
                               None if dx is None else dx.reshape(x3.shape))
    return dx3.reshape(saved._shape), None, None


# ---------------------------------------------------------------------------------------------

def _backward(dy, saved, ops, dx_out):
    V.saved_record(saved, Saved, ops)
    dy = V.grad_output(dy, saved._shape, saved._x.dtype)
    where = saved._place
    dy_on_gpu = V.dy_side(dy, where)
    x_here = not where.gpu or dy_on_gpu  # the saved x lives on dy's side
    dx_out = V.out_array(dx_out, dy, may_alias=False, name="dx_out", x_name="dy",
                         also=(saved._x, "the x saved by the forward pass") if x_here else None)
    host = where.host
    kind = saved._geometry[0]
    backward = (host.rows_backward if kind == "rows" else host.channels_backward
                if kind == "channels" else host.channels_last_backward if kind == "last"
                else lambda d, s, o: _window_backward(host, d, s, o))
    if saved._last is not None:
        return _last_backward(backward, dy, saved, dx_out)
    axis = saved._axis
    if axis != 1:  # channels-first kernels on x moved to channels-first (numbanorm arrays)
        dx, dweight, dbias = backward(_first(dy, axis), saved, _first(dx_out, axis))
        return (_public(dx, axis) if dx_out is None else dx_out), dweight, dbias
    if not where.gpu:  # (the placement's calls do nothing here; see _rows)
        dx, dweight, dbias = backward(dy, saved, None if dx_out is None else CPU.target(dx_out))
        return (dx if dx_out is None else CPU.deliver(dx, dx_out)), dweight, dbias
    dx, dweight, dbias = backward(where.grad_input(dy), saved, where.target(dx_out))
    return where.deliver(dx, dx_out), where.gradient(dweight), where.gradient(dbias)


def _last_backward(backward, dy, saved, dx_out):
    """The backward of a channels-last forward: dy read as the kernels' (N, S, C) array (one
    copy where its memory is laid out otherwise), dx in dy's layout."""
    where, last = saved._place, saved._last
    if where.gpu:
        dxk, dweight, dbias = backward(last.read(where.grad_input(dy)), saved,
                                       _last_target(where, last, dx_out))
        return (where.deliver(last.public(dxk), dx_out), where.gradient(dweight),
                where.gradient(dbias))
    target = None if dx_out is None else last.view(dx_out)
    dxk, dweight, dbias = backward(last.read(dy), saved, target)
    dx = last.public(dxk)
    if dx_out is not None:
        if target is None:
            np.copyto(dx_out, dx)
        dx = dx_out
    elif last.view(dy) is None:  # dy of another layout: dx in it
        in_dy_layout = np.empty_like(dy)
        np.copyto(in_dy_layout, dx)
        dx = in_dy_layout
    return dx, dweight, dbias
