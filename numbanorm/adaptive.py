"""Adaptive normalization: ops that mix the statistics of several normalizations with learned
weights, forward and backward, without an autograd engine.

    switch_norm(x, mean_weight, var_weight, ...)       Switchable Normalization (Luo et al.,
                                                        ICLR 2019): IN, LN and BN statistics
                                                        mixed by softmax weights
    batch_instance_norm(x, gate, ...)                   Batch-Instance Normalization (Nam & Kim,
                                                        NeurIPS 2018): BN and IN outputs mixed
                                                        by a per-channel gate in [0, 1]

each with NAME_forward -> (y, saved) and NAME_backward(dy, saved); the layers are
numbanorm.layers.SwitchNorm1d/2d/3d and BatchInstanceNorm1d/2d/3d.

Statistics from one read of x. x is viewed as (N, C, S); the backend's data_moments gives
(count S, mean, M2) of every (n, c) row, from the blocked Welford/Chan kernels every op uses.
Those N*C triples are Chan-merged over c for LN's statistics and over n for BN's
(numbanorm._chan's formula: chan_merge in order in switch_norm's compiled arithmetic,
merge_groups in batch_instance_norm): exact, with no second pass over x and no E[x^2] - mean^2.
The per-(n, c) mixed mean and rstd then make y = (x - mean)*rstd*w + b one elementwise pass
(data_affine). The small (N, C) arithmetic runs in float64 on the host, on every backend
(switch_norm's compiled, in numbanorm._mixing; batch_instance_norm's in NumPy).

Backward, with g = dy*w[c], Gm = dL/dmean = -rstd*sum(g) and Gv = dL/dvar =
-rstd^3/2*sum(g*(x - mean)) per (n, c): every statistic k the mix takes (mean_k, var_k over its
group of M_k values) passes its gradient back to x as

    d mean_k / dx = 1/M_k,        d var_k / dx = a_k*(x - mean) + c_k

(exact biased variance: a_k = 2/M_k, c_k = a_k*(mean - mean_k); reference mode: see
numbanorm._mixing._dvar), so that dx = dy*P + (x - mean)*Q + O per (n, c), with P = w*rstd and
Q, O from the group sums of Gm and Gv. One reduction pass (slot_sums: sum(dy),
sum(dy*(x - mean)) per (n, c)) and one elementwise pass (slot_dx), as batch_norm's backward.
The mixing weights' gradients go through the softmax: d w_j = p_j*(D_j - sum_k p_k*D_k),
D_k = sum(Gm*mean_k) (or sum(Gv*var_k)).

Dask arrays are not taken yet (a TypeError says so).
"""
import math

import numpy as np

from . import _device
from . import _validate as V
from ._docs import fill
from . import _mixing as M
from ._chan import merge_groups
from ._placement import CPU, place

__all__ = [
    "switch_norm", "switch_norm_forward", "switch_norm_backward",
    "batch_instance_norm", "batch_instance_norm_forward", "batch_instance_norm_backward",
]


class MixSaved:
    """What a `switch_norm_forward` or `batch_instance_norm_forward` keeps for its backward.

    Built by those functions, not by users. The record holds a reference to x: modifying x in
    place between forward and backward makes the backward wrong.

    Attributes
    ----------
    op : str
        'switch_norm' or 'batch_instance_norm'.
    mean, rstd : ndarray of shape (N, C)
        float64 NumPy arrays on every backend: the mixed statistics x was normalised with
        (switch_norm), or IN's (batch_instance_norm).
    bn_mean, bn_rstd : ndarray of shape (C,) or None
        batch_instance_norm's BN statistics (None for switch_norm).

    See Also
    --------
    switch_norm_forward, batch_instance_norm_forward

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> y, saved = nbn.batch_instance_norm_forward(x, np.full(2, 0.5), training=True)
    >>> saved.op, saved.mean.shape, saved.bn_mean
    ('batch_instance_norm', (2, 2), array([2.5, 4.5]))
    """

    __slots__ = ("op", "mean", "rstd", "bn_mean", "bn_rstd", "_x3", "_shape", "_place",
                 "_weight", "_has_bias", "_param_dtype", "_mix", "_training", "_gate")

    def __init__(self, op, x3, shape, place, mean, rstd, weight, has_bias, param_dtype,
                 training):
        self.op = op
        self._x3 = x3
        self._shape = shape
        self._place = place
        self.mean = mean
        self.rstd = rstd
        self._weight = weight
        self._has_bias = has_bias
        self._param_dtype = param_dtype
        self._training = training
        self._mix = self._gate = self.bn_mean = self.bn_rstd = None

    def __repr__(self):
        return f"MixSaved(op={self.op!r}, shape={self._shape})"


# ---------------------------------------------------------------------------------------------
# shared steps

def _host64(p):
    """A small parameter (NumPy or GPU) as a float64 NumPy array (None stays None)."""
    if p is None:
        return None
    if not isinstance(p, np.ndarray):
        p = p.copy_to_host()
    return p.astype(np.float64).reshape(-1)


def _store(buf, value64):
    """Write float64 values into a running buffer in place (NumPy or GPU)."""
    if isinstance(buf, np.ndarray):
        with np.errstate(over="ignore"):
            buf[...] = value64.reshape(buf.shape)
    else:
        buf.copy_to_device(np.ascontiguousarray(value64.astype(buf.dtype).reshape(buf.shape)))


def _begin(op, x, device, ndim_min, what):
    if _device.is_dask_array(x):
        raise TypeError(f"{op} does not take Dask arrays yet: compute x first, or map its "
                        "blocks (each holding whole batches) through it")
    x, where = place(x, device)
    V.ndim_at_least(x, "x", ndim_min, what)
    return x, where


def _params(x, where, weight, bias, running_mean, running_var, training):
    """The per-channel parameters checked (_validate.channel_params); with NumPy x, none may
    be a GPU array. They stay where they are: the mixing arithmetic reads them on the host."""
    weight, bias, running_mean, running_var = V.channel_params(
        x, weight, bias, running_mean, running_var, training)
    if where is CPU:
        for p, name in ((weight, "weight"), (bias, "bias"), (running_mean, "running_mean"),
                        (running_var, "running_var")):
            CPU.param(p, name)
    return weight, bias, running_mean, running_var


def _param_dtype(x, weight, bias):
    """The dtype of dweight and dbias: the parameters' (x's, or float32 for 16-bit x)."""
    return (weight if weight is not None else bias if bias is not None else x).dtype


def _rows_view(x, where):
    """x as the contiguous (N, C, S) array the kernels read, on the backend's side."""
    N, C = x.shape[:2]
    S = math.prod(x.shape[2:])
    xb = where.x if where.gpu else np.ascontiguousarray(x)
    return xb.reshape(N, C, S)


def _instance_moments(where, x3):
    """(view, count, mean, M2): the backend's DataView of x3 per (n, c) row, and the rows'
    float64 (count, mean, M2), shape (N, C), by its data_moments (one read of x)."""
    N, C, S = x3.shape
    view = where.host.data_view(x3, (2,))
    if x3.size == 0:
        nan = np.full((N, C), np.nan)
        return view, np.full((N, C), float(S)), nan, nan.copy()
    count, mean, m2 = where.host.data_moments(view, "propagate", False)[:3]
    return view, count.reshape(N, C), mean.reshape(N, C), m2.reshape(N, C)


def _dy_rows(dy, saved, dx_out):
    """(dy as (N, C, S) beside the saved x, dx_out validated): every check of a backward,
    before any kernel runs."""
    dy = V.grad_output(dy, saved._shape, saved._x3.dtype)
    where = saved._place
    on_gpu = V.dy_side(dy, where)
    x_here = not where.gpu or on_gpu
    dx_out = V.out_array(dx_out, dy, may_alias=False, name="dx_out", x_name="dy",
                         also=(saved._x3, "the x saved by the forward pass") if x_here
                         else None)
    if where.gpu:
        return where.grad_input(dy).reshape(saved._x3.shape), dx_out
    return np.ascontiguousarray(dy).reshape(saved._x3.shape), dx_out


def _grad(where, g, dtype):
    """A float64 parameter gradient in the parameters' dtype, as the caller's kind of array."""
    if g is None:
        return None
    with np.errstate(over="ignore"):
        g = g.astype(dtype)
    if where.gpu and not where.host_io:
        return where.deliver(_device.to_device(g), None)
    return g


def _dx(saved, dy3, dx_out, P, Q, O):
    """dx = dy*P + (x - mean)*Q + O per (n, c) (float64 (N, C) coefficients): the backward's
    elementwise pass, delivered as the caller's kind of array."""
    where = saved._place
    x3 = saved._x3
    N, C, S = x3.shape
    target = where.target(dx_out)
    shape = (N * C, S)
    P, Q, O = (np.broadcast_to(a, (N, C)).reshape(-1) for a in (P, Q, O))
    dx = where.host.slot_dx(x3.reshape(shape), dy3.reshape(shape), saved.mean.reshape(-1), P,
                            Q, O, None if target is None else target.reshape(shape))
    return where.deliver(dx.reshape(saved._shape), dx_out)


def _sums(saved, dy3):
    """Per-(n, c) float64 sum(dy) and sum(dy*(x - mean)), shape (N, C)."""
    x3 = saved._x3
    N, C, S = x3.shape
    sdy, sdyx = saved._place.host.slot_sums(x3.reshape(N * C, S), dy3.reshape(N * C, S),
                                            saved.mean.reshape(-1))
    return sdy.reshape(N, C), sdyx.reshape(N, C)


# ---------------------------------------------------------------------------------------------
# switch_norm

_KIND_NAMES = ("IN", "LN", "BN")


def _mix_kinds(ndim, using_bn):
    """The statistics mixed (numbanorm._mixing's codes), in the order of mean_weight and
    var_weight."""
    if ndim == 2:  # (N, C): SwitchNorm1d mixes LN and BN
        return (M.LN, M.BN) if using_bn else (M.LN,)
    return (M.IN, M.LN, M.BN) if using_bn else (M.IN, M.LN)


def _mixing_weights(v, name, K, kinds):
    v = V.array(v, name)
    if v.shape != (K,):
        raise ValueError(f"{name} must have shape ({K},), one weight for each of "
                         f"{', '.join(_KIND_NAMES[k] for k in kinds)}, got shape {v.shape}")
    if not isinstance(v, np.ndarray):
        v = v.copy_to_host()
    return v


def _switch_norm(x, mean_weight, var_weight, running_mean, running_var, weight, bias, training,
                 momentum, eps, using_bn, reference, out, keep, device):
    x, where = _begin("switch_norm", x, device, 2, "(N, C) or (N, C, *spatial)")
    training = bool(training)
    using_bn = bool(using_bn)
    reference = bool(reference)
    N, C = x.shape[:2]
    S = math.prod(x.shape[2:])
    kinds = _mix_kinds(x.ndim, using_bn)
    mean_weight = _mixing_weights(mean_weight, "mean_weight", len(kinds), kinds)
    var_weight = _mixing_weights(var_weight, "var_weight", len(kinds), kinds)
    weight, bias, running_mean, running_var = _params(
        x, where, weight, bias, running_mean, running_var, training and using_bn)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    if using_bn and not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False and "
                         "using_bn=True (eval mode takes BN's statistics from them)")
    if training and using_bn and N * S == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input "
                         f"size {x.shape}")
    x3 = _rows_view(x, where)
    view, count, mean_in, m2_in = _instance_moments(where, x3)
    K = len(kinds)
    code = np.array(kinds, np.int64)
    mw = np.empty(K)
    vw = np.empty(K)
    stat_mean = np.empty((K, N, C))
    stat_var = np.empty((K, N, C))
    mean = np.empty((N, C))
    rstd = np.empty((N, C))
    batch_mean = np.full(C, np.nan)
    batch_var = np.full(C, np.nan)
    nan = np.full(C, np.nan)
    rm = _host64(running_mean) if running_mean is not None else nan
    rv = _host64(running_var) if running_var is not None else nan
    M.switch_forward(mean_in, m2_in, S, code, training, reference, rm, rv,
                     mean_weight.astype(np.float64), var_weight.astype(np.float64), eps, mw,
                     vw, stat_mean, stat_var, mean, rstd, batch_mean, batch_var)
    w64 = _host64(weight)
    scale = rstd if w64 is None else rstd * w64
    shift = 0.0 if bias is None else _host64(bias)
    y = _write_y(where, view, x, mean, scale, shift, out)
    if training and using_bn and running_mean is not None and N * S:
        with np.errstate(over="ignore", invalid="ignore"):
            new_mean = (1.0 - momentum) * rm + momentum * batch_mean
            new_var = (1.0 - momentum) * rv + momentum * batch_var
        _store(running_mean, new_mean)
        _store(running_var, new_var)
    if not keep:
        return y, None
    saved = MixSaved("switch_norm", x3, x.shape, where, mean, rstd, w64, bias is not None,
                     _param_dtype(x, weight, bias), training)
    saved._mix = (code, mw, vw, stat_mean, stat_var, reference, mean_weight.dtype,
                  var_weight.dtype)
    return y, saved


def _write_y(where, view, x, mean, scale, shift, out):
    """y = (x - mean)*scale + shift per (n, c) (float64, broadcastable to (N, C)) by the
    backend's data_affine, delivered as the caller's kind of array (into out when given)."""
    target = where.target(out)
    if target is not None:
        target = target.reshape(view.x.shape)
    y = where.host.data_affine(view, mean.reshape(-1),
                               np.broadcast_to(scale, mean.shape).reshape(-1),
                               np.broadcast_to(shift, mean.shape).reshape(-1), target)
    return where.deliver(y.reshape(x.shape), out)


@fill
def switch_norm(x, mean_weight, var_weight, running_mean=None, running_var=None, weight=None,
                bias=None, training=False, momentum=0.1, eps=1e-5, using_bn=True,
                reference=False, *, out=None, device=None):
    """Switchable Normalization (Luo et al., ICLR 2019).

    x normalised with a softmax-weighted mix of the IN, LN and BN means and variances, then
    the per-channel affine transform. All three come from one read of x (IN's per-(n, c)
    moments, Chan-merged over c for LN's and over n for BN's).

    Parameters
    ----------
    x : ndarray of shape (N, C) or ``(N, C, *spatial)``
        (N, C) mixes LN and BN (SwitchNorm1d); ``(N, C, *spatial)`` mixes IN, LN and BN.
    mean_weight, var_weight : ndarray of shape (K,)
        The mixing logits, softmax-ed: K = 3 (IN, LN, BN), or 2 (IN, LN) with using_bn=False;
        for (N, C) input K = 2 (LN, BN), or 1 (LN).
    running_mean, running_var : ndarray of shape (C,), optional
        BN's running statistics: updated in place in training mode
        (``new = (1 - momentum)*old + momentum*batch``, the batch's unbiased variance into
        running_var), read in eval mode.
    weight, bias : ndarray of shape (C,), optional
        The per-channel affine transform after the normalization (None: 1 and 0).
    training : bool, default False
        BN's statistics from the batch (True) or from the running buffers (False). IN's and
        LN's always come from x.
    momentum : float, default 0.1
    eps : float, default 1e-5
    using_bn : bool, default True
        Whether BN's statistics enter the mix.
    reference : bool, default False
        False: exact biased variances for all three. True: the reference code's numbers
        (switchablenorms/Switchable-Normalization): IN's unbiased variance, LN and BN as
        mean(var_in + mean_in^2) - mean^2 (computed in float64), plain unbiased LN and BN
        variances on (N, C) input, and that BN variance into running_var.
    %(out)s
    %(device)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    switch_norm_forward, switch_norm_backward, SwitchNorm2d

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> logits = np.zeros(3)                       # IN, LN and BN weighted 1/3 each
    >>> nbn.switch_norm(x, logits, logits, training=True).round(4)
    array([[[-1.0835, -0.3612],
            [-0.6019,  0.1204]],
    <BLANKLINE>
           [[-0.1204,  0.6019],
            [ 0.3612,  1.0835]]])
    """
    return _switch_norm(x, mean_weight, var_weight, running_mean, running_var, weight, bias,
                        training, momentum, eps, using_bn, reference, out, False, device)[0]


@fill
def switch_norm_forward(x, mean_weight, var_weight, running_mean=None, running_var=None,
                        weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
                        using_bn=True, reference=False, *, out=None, device=None):
    """`switch_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, mean_weight, var_weight, running_mean, running_var, weight, bias, training, momentum
        As `switch_norm`.
    eps, using_bn, reference
        As `switch_norm`.
    %(out)s
    %(device)s

    %(returns_y)s
    saved : MixSaved
        saved.mean and saved.rstd are the mixed per-(n, c) statistics (float64, (N, C)).

    %(raises)s

    See Also
    --------
    switch_norm, switch_norm_backward

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> y, saved = nbn.switch_norm_forward(x, np.zeros(3), np.zeros(3), training=True)
    >>> saved.mean.round(4)
    array([[1.5   , 2.8333],
           [4.1667, 5.5   ]])
    """
    return _switch_norm(x, mean_weight, var_weight, running_mean, running_var, weight, bias,
                        training, momentum, eps, using_bn, reference, out, True, device)


@fill
def switch_norm_backward(dy, saved, *, dx_out=None):
    """The gradients of a `switch_norm_forward`, in training or eval mode (in eval mode BN's
    statistics are constants).

    Parameters
    ----------
    dy : ndarray
        The gradient of y: y's shape and dtype.
    saved : MixSaved
        The record `switch_norm_forward` returned.
    %(dx_out)s

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight, dbias : ndarray of shape (C,) or None
        None where the forward had no weight (bias).
    dmean_weight, dvar_weight : ndarray of shape (K,)
        The gradients of the mixing logits, in their dtypes.

    %(raises_backward)s

    See Also
    --------
    switch_norm_forward

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> y, saved = nbn.switch_norm_forward(x, np.zeros(3), np.zeros(3), training=True)
    >>> dx, dweight, dbias, dmean_weight, dvar_weight = nbn.switch_norm_backward(x, saved)
    >>> dmean_weight.round(4)
    array([-3.2103, -1.2841,  4.4944])
    """
    V.saved_record(saved, MixSaved, ("switch_norm",))
    where = saved._place
    dy3, dx_out = _dy_rows(dy, saved, dx_out)
    N, C, S = saved._x3.shape
    code, mw, vw, stat_mean, stat_var, reference, mw_dtype, vw_dtype = saved._mix
    sdy, sdyx = _sums(saved, dy3)
    w = saved._weight if saved._weight is not None else np.ones(C)
    P, Q, O = np.empty((N, C)), np.empty((N, C)), np.empty((N, C))
    dmean_weight, dvar_weight = np.empty(code.size), np.empty(code.size)
    dweight, dbias = np.empty(C), np.empty(C)
    M.switch_backward(sdy, sdyx, saved.mean, saved.rstd, stat_mean, stat_var, code,
                      saved._training, reference, mw, vw, w, S, P, Q, O, dmean_weight,
                      dvar_weight, dweight, dbias)
    dx = _dx(saved, dy3, dx_out, P, Q, O)
    return (dx, _grad(where, dweight if saved._weight is not None else None, saved._param_dtype),
            _grad(where, dbias if saved._has_bias else None, saved._param_dtype),
            _grad(where, dmean_weight, mw_dtype), _grad(where, dvar_weight, vw_dtype))


# ---------------------------------------------------------------------------------------------
# batch_instance_norm

def _batch_instance_norm(x, gate, running_mean, running_var, weight, bias, training, momentum,
                         eps, out, keep, device):
    x, where = _begin("batch_instance_norm", x, device, 3, "(N, C, *spatial)")
    training = bool(training)
    N, C = x.shape[:2]
    S = math.prod(x.shape[2:])
    if gate is None:
        raise TypeError("gate must be an array of shape (C,), got None")
    gate = V.optional_array(gate, "gate", (C,), x.dtype)
    weight, bias, running_mean, running_var = _params(
        x, where, weight, bias, running_mean, running_var, training)
    momentum = V.momentum(momentum)
    eps = V.eps(eps)
    out = V.out_array(out, x, may_alias=not keep)
    rho = _host64(gate)
    if training and not np.all((rho >= 0.0) & (rho <= 1.0)):
        bad = rho[~((rho >= 0.0) & (rho <= 1.0))]
        raise ValueError(f"gate must lie in [0, 1] in training mode, got values such as "
                         f"{float(bad[0])!r}: clamp it after each optimiser step "
                         "(BatchInstanceNorm*.clamp_gate(), or np.clip(gate, 0, 1, out=gate))")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False "
                         "(eval mode takes BN's statistics from them)")
    if S == 1 and N * C:
        raise ValueError("Expected more than 1 spatial element (instance normalization), got "
                         f"input size {x.shape}")
    x3 = _rows_view(x, where)
    view, count, mean_in, m2_in = _instance_moments(where, x3)
    with np.errstate(invalid="ignore", divide="ignore"):
        rstd_in = 1.0 / np.sqrt(m2_in / S + eps)
    if training:
        _, mean_bn, m2_bn = merge_groups(count, mean_in, m2_in, 0)
        mean_bn, m2_bn = mean_bn.reshape(C), m2_bn.reshape(C)
        var_bn = m2_bn / (N * S) if N * S else np.full(C, np.nan)
        if running_mean is not None and N * S:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                new_mean = (1.0 - momentum) * _host64(running_mean) + momentum * mean_bn
                new_var = ((1.0 - momentum) * _host64(running_var)
                           + momentum * m2_bn / (N * S - 1))
            _store(running_mean, new_mean)
            _store(running_var, new_var)
    else:
        mean_bn, var_bn = _host64(running_mean), _host64(running_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        rstd_bn = 1.0 / np.sqrt(var_bn + eps)
    w64 = _host64(weight)
    w = 1.0 if w64 is None else w64
    b = 0.0 if bias is None else _host64(bias)
    scale = w * (rho * rstd_bn + (1.0 - rho) * rstd_in)
    shift = b + w * rho * rstd_bn * (mean_in - mean_bn)
    y = _write_y(where, view, x, mean_in, scale, shift, out)
    if not keep:
        return y, None
    saved = MixSaved("batch_instance_norm", x3, x.shape, where, mean_in, rstd_in, w64,
                     bias is not None, _param_dtype(x, weight, bias), training)
    saved.bn_mean, saved.bn_rstd = mean_bn, rstd_bn
    saved._gate = (rho, gate.dtype)
    return y, saved


@fill
def batch_instance_norm(x, gate, running_mean=None, running_var=None, weight=None, bias=None,
                        training=False, momentum=0.1, eps=1e-5, *, out=None, device=None):
    """Batch-Instance Normalization (Nam & Kim, NeurIPS 2018).

    ``y = (rho*BN(x) + (1 - rho)*IN(x))*weight + bias``, rho the per-channel gate in [0, 1].
    BN's and IN's statistics come from one read of x (IN's per-(n, c) moments, Chan-merged
    over n for BN's).

    Parameters
    ----------
    x : ndarray of shape ``(N, C, *spatial)``
        More than one spatial value (IN normalises over them).
    gate : ndarray of shape (C,)
        rho, in x's dtype (float32 too for 16-bit x). In training mode a gate outside [0, 1]
        is a ValueError: the reference clamps it after every optimiser step
        (`BatchInstanceNorm2d.clamp_gate`).
    running_mean, running_var : ndarray of shape (C,), optional
        BN's running statistics: updated in place in training mode as `batch_norm` updates
        them (unbiased variance into running_var), read in eval mode.
    weight, bias : ndarray of shape (C,), optional
        None: 1 and 0.
    training : bool, default False
        BN's statistics from the batch (True) or the running buffers (False); IN's always
        come from x.
    momentum : float, default 0.1
    eps : float, default 1e-5
    %(out)s
    %(device)s

    %(returns_y)s

    %(raises)s

    See Also
    --------
    batch_instance_norm_forward, batch_instance_norm_backward, BatchInstanceNorm2d

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> nbn.batch_instance_norm(x, np.array([1.0, 0.0]), training=True).round(4)
    array([[[-1.2127, -0.7276],
            [-1.    ,  1.    ]],
    <BLANKLINE>
           [[ 0.7276,  1.2127],
            [-1.    ,  1.    ]]])
    """
    return _batch_instance_norm(x, gate, running_mean, running_var, weight, bias, training,
                                momentum, eps, out, False, device)[0]


@fill
def batch_instance_norm_forward(x, gate, running_mean=None, running_var=None, weight=None,
                                bias=None, training=False, momentum=0.1, eps=1e-5, *, out=None,
                                device=None):
    """`batch_instance_norm` returning what the backward needs as well.

    Parameters
    ----------
    x, gate, running_mean, running_var, weight, bias, training, momentum, eps
        As `batch_instance_norm`.
    %(out)s
    %(device)s

    %(returns_y)s
    saved : MixSaved
        saved.mean and saved.rstd are IN's per-(n, c) statistics, saved.bn_mean and
        saved.bn_rstd BN's per channel (float64).

    %(raises)s

    See Also
    --------
    batch_instance_norm, batch_instance_norm_backward

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> y, saved = nbn.batch_instance_norm_forward(x, np.full(2, 0.5), training=True)
    >>> saved.bn_rstd.round(4)
    array([0.4851, 0.4851])
    """
    return _batch_instance_norm(x, gate, running_mean, running_var, weight, bias, training,
                                momentum, eps, out, True, device)


@fill
def batch_instance_norm_backward(dy, saved, *, dx_out=None):
    """The gradients of a `batch_instance_norm_forward`.

    Parameters
    ----------
    dy : ndarray
        The gradient of y: y's shape and dtype.
    saved : MixSaved
        The record `batch_instance_norm_forward` returned.
    %(dx_out)s

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight, dbias : ndarray of shape (C,) or None
        None where the forward had no weight (bias).
    dgate : ndarray of shape (C,)
        The gate's gradient, in its dtype.

    %(raises_backward)s

    See Also
    --------
    batch_instance_norm_forward

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> y, saved = nbn.batch_instance_norm_forward(x, np.full(2, 0.5), training=True)
    >>> dx, dweight, dbias, dgate = nbn.batch_instance_norm_backward(x, saved)
    >>> dgate.round(4)
    array([6.2462, 6.2462])
    """
    V.saved_record(saved, MixSaved, ("batch_instance_norm",))
    where = saved._place
    dy3, dx_out = _dy_rows(dy, saved, dx_out)
    N, C, S = saved._x3.shape
    rho, gate_dtype = saved._gate
    w = saved._weight if saved._weight is not None else np.ones(C)
    r_in, m_in = saved.rstd, saved.mean
    r_bn, m_bn = saved.bn_rstd, saved.bn_mean
    sdy, sdyx = _sums(saved, dy3)             # sdyx: sum(dy*(x - mean_in)) per (n, c)
    with np.errstate(invalid="ignore", over="ignore"):
        sdyx_bn = sdyx + (m_in - m_bn) * sdy  # sum(dy*(x - mean_bn)) per (n, c)
        P = w * (rho * r_bn + (1.0 - rho) * r_in)
        # IN: rstd_in*(G - mean(G) - xhat_in*mean(G*xhat_in)), G = dy*w*(1 - rho)
        k_in = w * (1.0 - rho)
        Q = -r_in ** 3 * k_in * sdyx / S
        O = -r_in * k_in * sdy / S
        if saved._training:
            # BN: rstd_bn*(G - mean(G) - xhat_bn*mean(G*xhat_bn)), G = dy*w*rho, over (n, s)
            k_bn = w * rho
            M = N * S
            t_dy = k_bn * sdy.sum(axis=0) / M
            t_dyx = k_bn * r_bn ** 2 * sdyx_bn.sum(axis=0) / M
            Q = Q - r_bn * t_dyx
            O = O - r_bn * (t_dy + t_dyx * (m_in - m_bn))
        dw_terms = rho * r_bn * sdyx_bn + (1.0 - rho) * r_in * sdyx
        dgate = (w * (r_bn * sdyx_bn - r_in * sdyx)).sum(axis=0)
    dx = _dx(saved, dy3, dx_out, P, Q, O)
    dweight = dw_terms.sum(axis=0) if saved._weight is not None else None
    dbias = sdy.sum(axis=0) if saved._has_bias else None
    return (dx, _grad(where, dweight, saved._param_dtype), _grad(where, dbias, saved._param_dtype),
            _grad(where, dgate, gate_dtype))
