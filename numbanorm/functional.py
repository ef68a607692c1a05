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
from ._placement import CPU, place
from ._saved import Saved

__all__ = [
    "Saved",
    "batch_norm", "batch_norm_forward", "batch_norm_backward",
    "layer_norm", "layer_norm_forward", "layer_norm_backward",
    "group_norm", "group_norm_forward", "group_norm_backward",
    "instance_norm", "instance_norm_forward", "instance_norm_backward",
    "rms_norm", "rms_norm_forward", "rms_norm_backward",
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
# batch_norm

def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, out, keep,
                device):
    x, where = place(x, device)
    V.ndim_at_least(x, "x", 2, "(N, C) or (N, C, *spatial)")
    training = bool(training)
    weight, bias, running_mean, running_var = _check_channels_params(
        x, weight, bias, running_mean, running_var, training, where)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    N, C = x.shape[:2]
    if training and N * _prod(x.shape[2:]) == 1:
        raise ValueError("Expected more than 1 value per channel when training, got input "
                         f"size {x.shape}")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False "
                         "(eval mode normalises with the running statistics)")
    return _channels("batch_norm", x, training, eps, momentum, running_mean, running_var,
                     weight, bias, out, (C,), keep, where)


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
    x, where = place(x, device)
    V.ndim_at_least(x, "x", 2, "(N, C, *spatial)")
    num_groups = V.positive_int(num_groups, "num_groups")
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"num_groups ({num_groups}) must divide the number of channels "
                         f"({C}) of x")
    weight, bias = _affine_params(x, (C,), weight, bias, where)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    S = _prod(x.shape[2:])
    geometry = ("rows", N * num_groups, C // num_groups * S, num_groups, S, C, True)
    return _rows("group_norm", x, geometry, weight, bias, eps, out, (N, num_groups), keep,
                 where)


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
    x, where = place(x, device)
    V.ndim_at_least(x, "x", 3, "(N, C, *spatial)")
    use_input_stats = bool(use_input_stats)
    weight, bias, running_mean, running_var = _check_channels_params(
        x, weight, bias, running_mean, running_var, use_input_stats, where)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    N, C = x.shape[:2]
    S = _prod(x.shape[2:])
    if not use_input_stats:
        if running_mean is None:
            raise ValueError("running_mean and running_var are required when "
                             "use_input_stats=False")
        return _channels("instance_norm", x, False, eps, momentum, running_mean, running_var,
                         weight, bias, out, (N, C), keep, where)
    if S == 1:
        raise ValueError("Expected more than 1 spatial element when training, got input size "
                         f"{x.shape}")
    geometry = ("rows", N * C, S, C, S, C, True)
    y, saved = _rows("instance_norm", x, geometry, weight, bias, eps, out, (N, C), True, where)
    if running_mean is not None and N * S and saved is not None:  # an empty batch leaves them
        where.host.instance_running_update(saved._mean64, saved._rstd64, N, C, S, eps, momentum,
                                           running_mean, running_var)
        where.write_back()
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


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0, *, out=None, device=None):
    """Local response normalization across channels, as torch.nn.functional.local_response_norm.

    y[c] = x[c] / (k + alpha/size * sum of x[c']^2)^beta over c' in [c - size//2,
    c + (size - 1)//2], zero padded; the divisor is always `size`. The window sums are O(1)
    per value and never subtract (numbanorm.cpu.window).

    Parameters
    ----------
    x : array of shape (N, C, *spatial), at least 3 dimensions
        An empty x is returned as it is (PyTorch returns the same tensor). A Dask x gives a
        lazy y (each block with its neighbouring channels; the NumPy result bit for bit).
    size : int
        Channels in the window, at least 1.
    alpha, beta, k : float
        Finite real numbers (PyTorch's defaults 1e-4, 0.75, 1.0).
    out : array, optional
        Where y goes (may be x itself).
    device : None, "cpu" or "cuda"

    Returns
    -------
    y : array of x's shape and dtype
    """
    return _local_response_norm(x, size, alpha, beta, k, out, False, device)[0]


def local_response_norm_forward(x, size, alpha=1e-4, beta=0.75, k=1.0, *, out=None,
                                device=None):
    """`local_response_norm` returning (y, saved); saved.mean and saved.rstd are None."""
    return _local_response_norm(x, size, alpha, beta, k, out, True, device)


def local_response_norm_backward(dy, saved, *, dx_out=None):
    """dx of a `local_response_norm_forward`."""
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
                if kind == "channels" else lambda d, s, o: _window_backward(host, d, s, o))
    if not where.gpu:  # (the placement's calls do nothing here; see _rows)
        dx, dweight, dbias = backward(dy, saved, None if dx_out is None else CPU.target(dx_out))
        return (dx if dx_out is None else CPU.deliver(dx, dx_out)), dweight, dbias
    dx, dweight, dbias = backward(where.grad_input(dy), saved, where.target(dx_out))
    return where.deliver(dx, dx_out), where.gradient(dweight), where.gradient(dbias)
