"""Stateful layers with PyTorch's constructor arguments, attributes and state_dict keys, built
on the functional forward/backward pairs. For NumPy networks without an autograd engine:

    layer = BatchNorm2d(64)
    y = layer(x)              # forward; keeps what backward needs
    dx = layer.backward(dy)   # sets layer.grad_weight and layer.grad_bias
"""
import warnings
from collections import OrderedDict

import numpy as np

from . import _device
from . import _validate as V
from ._docs import fill
from . import adaptive as A
from . import functional as F
from ._dtypes import ACCEPTED, is_float, is_half

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm",
           "LocalResponseNorm", "SwitchNorm1d", "SwitchNorm2d", "SwitchNorm3d",
           "BatchInstanceNorm1d", "BatchInstanceNorm2d", "BatchInstanceNorm3d"]


def _dtype(dtype):
    try:
        dtype = np.dtype(np.float32 if dtype is None else dtype)
    except TypeError:
        raise TypeError(f"dtype must be {ACCEPTED}, got {dtype!r}") from None
    if not is_float(dtype):
        raise TypeError(f"dtype must be {ACCEPTED}, got {dtype}")
    return dtype


def _to_numpy(value, key):
    if hasattr(value, "detach"):  # a PyTorch tensor, possibly requiring grad
        value = value.detach().cpu().numpy()
    elif _device.is_device_array(value) and hasattr(value, "copy_to_host"):
        value = value.copy_to_host()
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"state_dict[{key!r}] cannot be converted to a NumPy array: "
                        f"{exc}") from exc


def _device_name(device):
    """A torch.device (or anything with a string `type` and no index beyond 0) as its name;
    anything else as it is, for _device.requested to accept or refuse."""
    kind = getattr(device, "type", None)
    if isinstance(kind, str) and getattr(device, "index", None) in (None, 0):
        return kind
    return device


def _bias_repr(layer):
    """torch 2.13's repr: whether the layer has a bias."""
    return f", bias={layer.bias is not None}"


class _Norm:
    """Shared machinery: train/eval, forward/backward bookkeeping, state_dict."""

    _state_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def __init__(self):
        self.training = True
        self.grad_weight = None
        self.grad_bias = None
        self._saved = None
        self._unbatched = False

    def train(self, mode=True):
        """Set training mode (mode=True) or eval mode (mode=False).

        Parameters
        ----------
        mode : bool, default True

        Returns
        -------
        layer
            self.
        """
        self.training = bool(mode)
        return self

    def eval(self):
        """Set eval mode (running statistics where the layer keeps them); ``train(False)``.

        Returns
        -------
        layer
            self.
        """
        return self.train(False)

    def __call__(self, x):
        return self.forward(x)

    @property
    def device(self):
        """"cuda" when the parameters and buffers live on the GPU, else "cpu"."""
        return "cuda" if getattr(self, "_on_gpu", False) else "cpu"

    def _place_on(self, device):
        """The constructor's device=: None (NumPy parameters) or what .to(device) means."""
        if device is not None:
            self.to(device)

    def to(self, device):
        """Move the parameters and buffers to the GPU or back.

        On the GPU (numba device arrays) the layer takes GPU input, and training updates the
        running buffers in place there.

        Parameters
        ----------
        device : {'cpu', 'cuda'} or torch.device
            A torch.device is taken by its type.

        Returns
        -------
        layer
            self.
        """
        device = _device.requested(_device_name(device))
        if device is None:
            raise ValueError("device must be 'cpu' or 'cuda', got None")
        moved = {}
        for key, value in self._present_state():
            if key == "num_batches_tracked":
                continue
            on_gpu = not isinstance(value, np.ndarray)
            if device == "cuda" and not on_gpu:
                value = _device.to_device(value)
            elif device == "cpu" and on_gpu:
                value = value.copy_to_host()
            moved[key] = value
        for key, value in moved.items():  # all moved before any is replaced
            setattr(self, key, value)
        self._on_gpu = device == "cuda"
        return self

    def forward(self, x):
        """y for x; keeps what `backward` needs (also ``layer(x)``).

        Parameters
        ----------
        x : ndarray
            NumPy, GPU (after ``to('cuda')``) or Dask (inference only) array.

        Returns
        -------
        y : ndarray
            x's shape and dtype.
        """
        try:
            y, saved = self._forward(x)
        except TypeError as exc:
            self._dtype_hint(x, exc)
            raise
        self._saved = saved
        return y

    def backward(self, dy):
        """dx for the gradient dy of the last forward's output; sets grad_weight and grad_bias.

        Parameters
        ----------
        dy : ndarray
            y's shape and dtype.

        Returns
        -------
        dx : ndarray

        Raises
        ------
        RuntimeError
            No forward ran before (or it ran on a Dask array: inference only).
        """
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward(), or "
                               "after a forward on a Dask array (the Dask path is inference "
                               "only)")
        if self._unbatched:
            dy = V.array(dy, "dy")
            dy = dy.reshape((1,) + tuple(dy.shape))
        dx, dweight, dbias = self._backward(dy, self._saved)
        self.grad_weight, self.grad_bias = dweight, dbias
        return dx.reshape(tuple(dx.shape)[1:]) if self._unbatched else dx

    def _dtype_hint(self, x, exc):
        """exc again with how to build the layer for x's dtype, where a parameter check refused
        x's dtype because the layer's parameters have another (float32 parameters serve 16-bit
        x); else nothing (the caller re-raises exc as it is)."""
        p = getattr(self, "weight", None)
        if p is None:
            p = getattr(self, "running_mean", None)
        xd = getattr(x, "dtype", None)
        if p is None or not isinstance(xd, np.dtype) or xd == p.dtype or (
                is_half(xd) and p.dtype == np.float32):
            return
        raise TypeError(f"{exc} ({type(self).__name__} holds {p.dtype} parameters: build it "
                        f"with dtype={xd.name!r} for {xd} x, or pass x as {p.dtype})") from None

    def _present_state(self):
        for key in self._state_keys:
            value = getattr(self, key, None)
            if value is not None:
                yield key, value

    def state_dict(self):
        """Copies of the parameters and buffers under PyTorch's key names.

        Returns
        -------
        collections.OrderedDict
            NumPy arrays (host copies of GPU ones); num_batches_tracked as an int64 array.
        """
        state = OrderedDict()
        for key, value in self._present_state():
            if key == "num_batches_tracked":
                state[key] = np.array(value, dtype=np.int64)
            elif isinstance(value, np.ndarray):
                state[key] = value.copy()
            else:  # on the GPU: a host copy
                state[key] = value.copy_to_host()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Load parameters and buffers, checked before anything is written.

        Parameters
        ----------
        state_dict : mapping
            NumPy arrays or PyTorch tensors under PyTorch's key names (``model.state_dict()``).
        strict : bool, default True
            Whether missing or unexpected keys are an error.

        Raises
        ------
        ValueError
            Missing or unexpected keys (strict), or a value of the wrong shape.
        TypeError
            A value that is not floating point (num_batches_tracked: one integer).
        """
        expected = dict(self._present_state())
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict does not match {type(self).__name__}: missing keys "
                             f"{missing}, unexpected keys {unexpected}")
        staged = {}
        for key, current in expected.items():
            if key not in state_dict:
                continue
            value = _to_numpy(state_dict[key], key)
            if key == "num_batches_tracked":
                if value.size != 1 or value.dtype.kind not in "iu":
                    raise TypeError(f"state_dict['num_batches_tracked'] must be one integer, "
                                    f"got {value!r}")
                staged[key] = int(value.reshape(()))
                continue
            if value.shape != current.shape:
                raise ValueError(f"state_dict[{key!r}] must have shape {current.shape}, "
                                 f"got {value.shape}")
            if value.dtype.kind != "f" and not is_float(value.dtype):
                raise TypeError(f"state_dict[{key!r}] must be floating point, got {value.dtype}")
            staged[key] = value
        for key, value in staged.items():
            if key == "num_batches_tracked":
                self.num_batches_tracked = value
            elif isinstance(getattr(self, key), np.ndarray):
                getattr(self, key)[...] = value
            else:
                target = getattr(self, key)
                target.copy_to_device(np.ascontiguousarray(value, target.dtype))

    def __repr__(self):
        return f"{type(self).__name__}({self._extra_repr()})"


def _channel_axis(axis):
    """A layer's channel_axis: 1 (PyTorch's ``(N, C, *spatial)``) or -1 (``(N, *spatial, C)``)."""
    if isinstance(axis, bool) or axis not in (1, -1):
        raise ValueError(f"channel_axis must be 1 (channels first) or -1 (channels last), got "
                         f"{axis!r}")
    return int(axis)


class _ChannelNorm(_Norm):
    """Common constructor of the batch and instance norms. channel_axis: 1 (PyTorch's layout)
    or -1 (``(N, *spatial, C)`` input, as Keras and Flax); channels-last memory is computed where it
    lies either way (numbanorm.functional.batch_norm)."""

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, device, dtype,
                 bias, channel_axis=1):
        super().__init__()
        self.num_features = V.positive_int(num_features, "num_features")
        self.channel_axis = _channel_axis(channel_axis)
        self.eps = V.eps(eps)
        self.momentum = V.momentum(momentum, allow_none=True)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = _dtype(dtype)
        C = self.num_features
        self.weight = np.ones(C, dtype) if self.affine else None
        self.bias = np.zeros(C, dtype) if self.affine and bias else None
        if self.track_running_stats:
            self.running_mean = np.zeros(C, dtype)
            self.running_var = np.ones(C, dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._place_on(device)

    def reset_running_stats(self):
        """running_mean to zeros, running_var to ones, num_batches_tracked to 0."""
        if self.track_running_stats:
            for buf, value in ((self.running_mean, 0.0), (self.running_var, 1.0)):
                if isinstance(buf, np.ndarray):
                    buf[...] = value
                else:
                    buf.copy_to_device(np.full(buf.shape, value, buf.dtype))
            self.num_batches_tracked = 0

    def _check_ndim(self, x):
        if not _device.is_dask_array(x):
            x = V.array(x, "x")
        if x.ndim not in self._ndims:
            allowed = " or ".join(f"{d}D" for d in self._ndims)
            raise ValueError(f"{type(self).__name__} expects {allowed} input, got shape {x.shape}")
        return x

    def _extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}{_bias_repr(self)}, "
                f"track_running_stats={self.track_running_stats}")


class _BatchNorm(_ChannelNorm):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True,
                 channel_axis=1):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias, channel_axis)

    def _forward(self, x):
        x = self._check_ndim(x)
        C = x.shape[1 if self.channel_axis == 1 else x.ndim - 1]
        if C != self.num_features:
            raise ValueError(f"{type(self).__name__} was built for {self.num_features} "
                             f"features but x has {C} channels (shape {tuple(x.shape)}): build "
                             f"it with num_features={C}, or pass x with {self.num_features}")
        update = self.training and self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if update and self.momentum is None:  # cumulative moving average
            factor = 1.0 / (self.num_batches_tracked + 1)
        use_buffers = not self.training or self.track_running_stats
        result = F.batch_norm_forward(
            x, self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None, self.weight, self.bias,
            self.training or self.running_mean is None, factor, self.eps,
            channel_axis=self.channel_axis)
        if update:
            self.num_batches_tracked += 1
        return result

    _backward = staticmethod(F.batch_norm_backward)


@fill
class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) input, as ``torch.nn.BatchNorm1d``.

    %(batch_norm_layer)s

    Examples
    --------
    >>> x = np.arange(6.0).reshape(3, 2)
    >>> bn = nbn.BatchNorm1d(2, dtype=np.float64)
    >>> y = bn(x)                            # training: batch statistics, buffers updated
    >>> bn.running_mean
    array([...])
    >>> dx = bn.backward(np.ones_like(y))    # sets bn.grad_weight, bn.grad_bias
    >>> bn.grad_bias
    array([...])
    >>> y_eval = bn.eval()(x)                # the running statistics from now on
    """
    _ndims = (2, 3)


@fill
class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) input, as ``torch.nn.BatchNorm2d``.

    %(batch_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 1, 2)
    >>> bn = nbn.BatchNorm2d(2, dtype=np.float64)
    >>> y = bn(x)                            # training: batch statistics, buffers updated
    >>> bn.running_mean
    array([...])
    >>> dx = bn.backward(np.ones_like(y))    # sets bn.grad_weight, bn.grad_bias
    >>> bn.grad_bias
    array([...])
    >>> y_eval = bn.eval()(x)                # the running statistics from now on
    """
    _ndims = (4,)


@fill
class BatchNorm3d(_BatchNorm):
    """Batch normalization of (N, C, D, H, W) input, as ``torch.nn.BatchNorm3d``.

    %(batch_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 1, 1, 2)
    >>> bn = nbn.BatchNorm3d(2, dtype=np.float64)
    >>> y = bn(x)                            # training: batch statistics, buffers updated
    >>> bn.running_mean
    array([...])
    >>> dx = bn.backward(np.ones_like(y))    # sets bn.grad_weight, bn.grad_bias
    >>> bn.grad_bias
    array([...])
    >>> y_eval = bn.eval()(x)                # the running statistics from now on
    """
    _ndims = (5,)


class _InstanceNorm(_ChannelNorm):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True,
                 channel_axis=1):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias, channel_axis)

    def _forward(self, x):
        x = self._check_ndim(x)
        self._unbatched = x.ndim == self._ndims[0]
        if self._unbatched:
            x = x.reshape((1,) + tuple(x.shape))
        axis = 1 if self.channel_axis == 1 else x.ndim - 1
        if x.shape[axis] != self.num_features:
            dim = axis - 1 if self._unbatched else axis
            message = (f"expected input's size at dim={dim} to match "
                       f"num_features ({self.num_features}), but got: {x.shape[axis]}.")
            if self.affine or self.track_running_stats:
                raise ValueError(message)
            warnings.warn(message, stacklevel=3)
        y, saved = F.instance_norm_forward(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            0.0 if self.momentum is None else self.momentum, self.eps,
            channel_axis=self.channel_axis)
        return (y.reshape(tuple(y.shape)[1:]) if self._unbatched else y), saved

    _backward = staticmethod(F.instance_norm_backward)


@fill
class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of (N, C, L) or unbatched (C, L) input, as
    ``torch.nn.InstanceNorm1d``.

    %(instance_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(1, 2, 4)
    >>> layer = nbn.InstanceNorm1d(2, affine=True, dtype=np.float64)
    >>> y = layer(x)
    >>> y.shape == x.shape
    True
    >>> dx = layer.backward(np.ones_like(y))  # sets grad_weight, grad_bias
    """
    _ndims = (2, 3)


@fill
class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of (N, C, H, W) or unbatched (C, H, W) input, as
    ``torch.nn.InstanceNorm2d``.

    %(instance_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(1, 2, 2, 2)
    >>> layer = nbn.InstanceNorm2d(2, affine=True, dtype=np.float64)
    >>> y = layer(x)
    >>> y.shape == x.shape
    True
    >>> dx = layer.backward(np.ones_like(y))  # sets grad_weight, grad_bias
    """
    _ndims = (3, 4)


@fill
class InstanceNorm3d(_InstanceNorm):
    """Instance normalization of (N, C, D, H, W) or unbatched (C, D, H, W) input, as
    ``torch.nn.InstanceNorm3d``.

    %(instance_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(1, 2, 1, 2, 2)
    >>> layer = nbn.InstanceNorm3d(2, affine=True, dtype=np.float64)
    >>> y = layer(x)
    >>> y.shape == x.shape
    True
    >>> dx = layer.backward(np.ones_like(y))  # sets grad_weight, grad_bias
    """
    _ndims = (4, 5)


class _ResidualForm:
    """The fused residual add + norm of a pre-norm Transformer block, in vLLM's convention
    (its RMSNorm.forward(x, residual)): forward(x, residual) returns (y, h), h = x + residual
    and y = norm(h) in one pass (functional.add_layer_norm / add_rms_norm), and the next
    backward(dy, dh=None) returns (dx, dresidual) and sets the parameter gradients.
    forward(x) alone is the plain norm, as before."""

    def __call__(self, x, residual=None):
        return self.forward(x, residual)

    def forward(self, x, residual=None):
        """y for x, or (y, h) for the fused residual add: h = x + residual, y = norm(h).

        Parameters
        ----------
        x : ndarray
        residual : ndarray, optional
            The residual stream, x's shape (see `add_layer_norm` for the dtypes).

        Returns
        -------
        y : ndarray
            Without residual.
        (y, h) : tuple of ndarray
            With residual.
        """
        if residual is None:
            self._fused = False
            return _Norm.forward(self, x)
        try:
            y, h, saved = self._add_forward(x, residual)
        except TypeError as exc:
            self._dtype_hint(x, exc)
            raise
        self._saved = saved
        self._fused = True
        return y, h

    def backward(self, dy, dh=None):
        """The gradients of the last forward; sets grad_weight and grad_bias.

        Parameters
        ----------
        dy : ndarray
            The gradient of y.
        dh : ndarray, optional
            The gradient of h (fused form only; None: 0).

        Returns
        -------
        dx : ndarray
            After a plain forward.
        (dx, dresidual) : tuple of ndarray
            After a fused forward.
        """
        if not getattr(self, "_fused", False):
            if dh is not None:
                raise ValueError("dh is the gradient of h, which only forward(x, residual) "
                                 "returns; the last forward was the plain norm")
            return _Norm.backward(self, dy)
        dx, dresidual, dweight, dbias = self._add_backward(dy, self._saved, dh)
        self.grad_weight, self.grad_bias = dweight, dbias
        return dx, dresidual


@fill
class LayerNorm(_ResidualForm, _Norm):
    """Layer normalization over the trailing normalized_shape, as ``torch.nn.LayerNorm``.

    Called with a residual, ``layer(x, residual)``, it is the fused residual add + layer norm
    of a pre-norm Transformer block (vLLM's convention): it returns (y, h), h = x + residual
    and y = layer_norm(h) in one pass (`add_layer_norm`), and the next
    ``backward(dy, dh=None)`` returns (dx, dresidual).

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing dimensions normalised over.
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Whether the layer has weight (ones) and bias (zeros) of shape normalized_shape.
    bias : bool, default True
        False leaves the bias out.
    %(layer_device_dtype)s

    Attributes
    ----------
    %(layer_attributes)s

    Notes
    -----
    %(layer_methods)s

    See Also
    --------
    layer_norm, add_layer_norm

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> ln = nbn.LayerNorm(3, dtype=np.float64)
    >>> ln(x).round(4)
    array([[-1.2247,  0.    ,  1.2247],
           [-1.2247,  0.    ,  1.2247]])
    >>> dx = ln.backward(np.ones_like(x))
    >>> ln.grad_bias
    array([2., 2., 2.])
    >>> y, h = ln(x, np.ones_like(x))          # fused: h = x + residual, y = layer_norm(h)
    >>> dx, dresidual = ln.backward(np.ones_like(y), np.zeros_like(h))
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self.normalized_shape = V.normalized_shape(normalized_shape)
        self.eps = V.eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        dtype = _dtype(dtype)
        self.weight = np.ones(self.normalized_shape, dtype) if self.elementwise_affine else None
        self.bias = (np.zeros(self.normalized_shape, dtype)
                     if self.elementwise_affine and bias else None)
        self._place_on(device)

    def _forward(self, x):
        return F.layer_norm_forward(x, self.normalized_shape, self.weight, self.bias, self.eps)

    _backward = staticmethod(F.layer_norm_backward)

    def _add_forward(self, x, residual):
        return F.add_layer_norm_forward(x, residual, self.normalized_shape, self.weight,
                                        self.bias, self.eps)

    _add_backward = staticmethod(F.add_layer_norm_backward)

    def _extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}{_bias_repr(self)}")


@fill
class GroupNorm(_Norm):
    """Group normalization of ``(N, C, *)`` input, as ``torch.nn.GroupNorm``.

    Parameters
    ----------
    num_groups : int
        Divides num_channels.
    num_channels : int
        C.
    eps : float, default 1e-5
    affine : bool, default True
        Whether the layer has weight (ones) and bias (zeros) of shape (C,).
    %(layer_device_dtype)s
    %(channel_keywords)s

    Attributes
    ----------
    %(layer_attributes)s

    Notes
    -----
    %(layer_methods)s

    See Also
    --------
    group_norm

    Examples
    --------
    >>> x = np.arange(8.0).reshape(1, 4, 2)
    >>> gn = nbn.GroupNorm(2, 4, dtype=np.float64)
    >>> gn(x).round(4)
    array([[[-1.3416, -0.4472],
            [ 0.4472,  1.3416],
            [-1.3416, -0.4472],
            [ 0.4472,  1.3416]]])
    >>> dx = gn.backward(np.ones_like(x))
    >>> gn.grad_weight.round(4)
    array([-1.7888,  1.7888, -1.7888,  1.7888])
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None,
                 *, bias=True, channel_axis=1):
        super().__init__()
        self.channel_axis = _channel_axis(channel_axis)
        self.num_groups = V.positive_int(num_groups, "num_groups")
        self.num_channels = V.positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.eps = V.eps(eps)
        self.affine = bool(affine)
        dtype = _dtype(dtype)
        self.weight = np.ones(self.num_channels, dtype) if self.affine else None
        self.bias = np.zeros(self.num_channels, dtype) if self.affine and bias else None
        self._place_on(device)

    def _forward(self, x):
        if not _device.is_dask_array(x):
            x = V.array(x, "x")
        if x.ndim < 2 or x.shape[1 if self.channel_axis == 1 else -1] != self.num_channels:
            want = (f"(N, {self.num_channels}, *)" if self.channel_axis == 1
                    else f"(N, *, {self.num_channels})")
            raise ValueError(f"GroupNorm expects input of shape {want}, got {x.shape}")
        return F.group_norm_forward(x, self.num_groups, self.weight, self.bias, self.eps,
                                    channel_axis=self.channel_axis)

    _backward = staticmethod(F.group_norm_backward)

    def _extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}{_bias_repr(self)}")


@fill
class RMSNorm(_ResidualForm, _Norm):
    """RMS normalization over the trailing normalized_shape, as ``torch.nn.RMSNorm``.

    Called with a residual, ``layer(x, residual)`` is the fused residual add + RMS norm
    (`add_rms_norm`), as `LayerNorm`'s.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing dimensions normalised over.
    eps : float, optional
        None (default): ``np.finfo(x.dtype).eps``, as PyTorch.
    elementwise_affine : bool, default True
        Whether the layer has a weight (ones) of shape normalized_shape.
    %(layer_device_dtype)s

    Attributes
    ----------
    weight : ndarray or None
        The scale (None without elementwise_affine).
    grad_weight : ndarray or None
        Its gradient, set by `backward`.
    bias, grad_bias : None
        Always None (kept for a uniform interface).
    training : bool
        Training mode.

    Notes
    -----
    %(layer_methods)s

    See Also
    --------
    rms_norm, add_rms_norm

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> rms = nbn.RMSNorm(3, dtype=np.float64)
    >>> rms(x).round(4)
    array([[0.4629, 0.9258, 1.3887],
           [0.4629, 0.9258, 1.3887]])
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        self.normalized_shape = V.normalized_shape(normalized_shape)
        self.eps = None if eps is None else V.eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        dtype = _dtype(dtype)
        self.weight = np.ones(self.normalized_shape, dtype) if self.elementwise_affine else None
        self.bias = None
        self._place_on(device)

    def _forward(self, x):
        return F.rms_norm_forward(x, self.normalized_shape, self.weight, self.eps)

    @staticmethod
    def _backward(dy, saved):
        dx, dweight = F.rms_norm_backward(dy, saved)
        return dx, dweight, None

    def _add_forward(self, x, residual):
        return F.add_rms_norm_forward(x, residual, self.normalized_shape, self.weight, self.eps)

    @staticmethod
    def _add_backward(dy, saved, dh):
        dx, dresidual, dweight = F.add_rms_norm_backward(dy, saved, dh)
        return dx, dresidual, dweight, None

    def _extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class LocalResponseNorm(_Norm):
    """Local response normalization across channels, as ``torch.nn.LocalResponseNorm``.

    No parameters: `backward` returns dx.

    Parameters
    ----------
    size : int
        Channels in the window.
    alpha : float, default 1e-4
    beta : float, default 0.75
    k : float, default 1.0

    Attributes
    ----------
    size, alpha, beta, k
        As given.
    training : bool
        Training mode (no effect).

    See Also
    --------
    local_response_norm

    Examples
    --------
    >>> x = np.array([[[1.0], [2.0], [3.0]]])
    >>> lrn = nbn.LocalResponseNorm(2, alpha=1.0, beta=1.0)
    >>> lrn(x).round(4)
    array([[[0.6667],
            [0.5714],
            [0.4   ]]])
    >>> dx = lrn.backward(np.ones_like(x))
    """

    _state_keys = ()

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size = V.positive_int(size, "size")
        self.alpha = V.finite_real(alpha, "alpha")
        self.beta = V.finite_real(beta, "beta")
        self.k = V.finite_real(k, "k")

    def _forward(self, x):
        return F.local_response_norm_forward(x, self.size, self.alpha, self.beta, self.k)

    @staticmethod
    def _backward(dy, saved):
        return F.local_response_norm_backward(dy, saved), None, None

    def _extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class _MixNorm(_Norm):
    """Shared parts of the adaptive layers: parameters kept in the reference code's shapes
    (so that its state_dict loads as it is), passed to the functional ops flattened."""

    def _flat(self, key):
        value = getattr(self, key)
        return None if value is None else value.reshape(-1)

    def backward(self, dy):
        """dx for the gradient dy of the last forward's output; sets the ``grad_*`` attributes
        (in the parameters' shapes)."""
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        grads = self._backward_op(dy, self._saved)
        for name, g in zip(self._grad_names, grads[1:]):
            param = getattr(self, name[len("grad_"):])
            setattr(self, name, None if g is None else g.reshape(param.shape))
        return grads[0]


class _SwitchNorm(_MixNorm):
    _state_keys = ("weight", "bias", "mean_weight", "var_weight", "running_mean",
                   "running_var", "num_batches_tracked")
    _grad_names = ("grad_weight", "grad_bias", "grad_mean_weight", "grad_var_weight")
    _backward_op = staticmethod(A.switch_norm_backward)

    def __init__(self, num_features, eps=1e-5, momentum=None, using_moving_average=True,
                 using_bn=True, last_gamma=False, reference=False, device=None, dtype=None):
        super().__init__()
        self.num_features = C = V.positive_int(num_features, "num_features")
        self.eps = V.eps(eps)
        self.momentum = V.momentum(self._momentum if momentum is None else momentum)
        self.using_moving_average = bool(using_moving_average)
        self.using_bn = bool(using_bn)
        self.last_gamma = bool(last_gamma)
        self.reference = bool(reference)
        dtype = _dtype(dtype)
        shape = (1, C) + (1,) * (self._ndims[0] - 2)
        self.weight = np.full(shape, 0.0 if last_gamma else 1.0, dtype)
        self.bias = np.zeros(shape, dtype)
        K = len(A._mix_kinds(self._ndims[0], self.using_bn))
        self.mean_weight = np.ones(K, dtype)
        self.var_weight = np.ones(K, dtype)
        self.grad_mean_weight = self.grad_var_weight = None
        buffer_shape = (1, C) if self._ndims[0] == 2 else (1, C, 1)
        if self.using_bn:
            self.running_mean = np.zeros(buffer_shape, dtype)
            self.running_var = np.zeros(buffer_shape, dtype)
        else:
            self.running_mean = self.running_var = None
        # batches averaged so far (using_moving_average=False only; saved with the state)
        self.num_batches_tracked = None if self.using_moving_average else 0
        self._place_on(device)

    def _forward(self, x):
        if not _device.is_dask_array(x):
            x = V.array(x, "x")
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            allowed = " or ".join(f"{d}D" for d in self._ndims)
            raise ValueError(f"{type(self).__name__} expects {allowed} input with "
                             f"{self.num_features} channels, got shape {x.shape}")
        update = self.training and self.using_bn
        momentum = self.momentum
        if update and not self.using_moving_average:  # the average of every batch so far
            momentum = 1.0 / (self.num_batches_tracked + 1)
        result = A.switch_norm_forward(
            x, self.mean_weight, self.var_weight, self._flat("running_mean"),
            self._flat("running_var"), self._flat("weight"), self._flat("bias"),
            self.training, momentum, self.eps, self.using_bn, self.reference)
        if update and not self.using_moving_average:
            self.num_batches_tracked += 1
        return result

    def _extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"using_moving_average={self.using_moving_average}, "
                f"using_bn={self.using_bn}, reference={self.reference}")


@fill
class SwitchNorm1d(_SwitchNorm):
    """Switchable Normalization of (N, C) input: LN and BN statistics mixed (Luo et al., ICLR 2019).

    The reference code's parameters, buffers and state_dict keys and shapes
    (switchablenorms/Switchable-Normalization), so its checkpoints load as they are (use
    reference=True for its numbers).

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float, default 1e-5
    momentum : float, optional
        PyTorch's convention, ``new = (1 - momentum)*old + momentum*batch``; None: 0.003, the
        reference's decay of 0.997.
    %(switch_norm_params)s

    Attributes
    ----------
    weight, bias : ndarray of shape (1, C)
    mean_weight, var_weight : ndarray of shape (2,)
        The mixing logits (ones at first).
    running_mean, running_var : ndarray of shape (1, C) or None
        BN's running statistics, zeros at first (None without using_bn).
    %(switch_norm_state)s

    See Also
    --------
    switch_norm

    Examples
    --------
    >>> x = np.arange(6.0).reshape(3, 2)
    >>> layer = nbn.SwitchNorm1d(2, dtype=np.float64)
    >>> y = layer(x)
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.grad_mean_weight.shape
    (2,)
    """
    _ndims = (2,)
    _momentum = 0.003


@fill
class SwitchNorm2d(_SwitchNorm):
    """Switchable Normalization of (N, C, H, W) input: IN, LN and BN statistics mixed (Luo et
    al., ICLR 2019).

    %(switch_norm_spatial)s
    %(switch_norm_params)s

    Attributes
    ----------
    weight, bias : ndarray of shape (1, C, 1, 1)
    mean_weight, var_weight : ndarray of shape (3,)
        The mixing logits (ones at first).
    running_mean, running_var : ndarray of shape (1, C, 1) or None
        BN's running statistics, zeros at first (None without using_bn).
    %(switch_norm_state)s

    See Also
    --------
    switch_norm

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 1, 2)
    >>> layer = nbn.SwitchNorm2d(2, dtype=np.float64)
    >>> y = layer(x)
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.grad_mean_weight.shape
    (3,)
    """
    _ndims = (4,)
    _momentum = 0.1


@fill
class SwitchNorm3d(SwitchNorm2d):
    """Switchable Normalization of (N, C, D, H, W) input: IN, LN and BN statistics mixed (Luo
    et al., ICLR 2019).

    %(switch_norm_spatial)s
    %(switch_norm_params)s

    Attributes
    ----------
    weight, bias : ndarray of shape (1, C, 1, 1, 1)
    mean_weight, var_weight : ndarray of shape (3,)
        The mixing logits (ones at first).
    running_mean, running_var : ndarray of shape (1, C, 1) or None
        BN's running statistics, zeros at first (None without using_bn).
    %(switch_norm_state)s

    See Also
    --------
    switch_norm

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 1, 1, 2)
    >>> layer = nbn.SwitchNorm3d(2, dtype=np.float64)
    >>> y = layer(x)
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.grad_mean_weight.shape
    (3,)
    """
    _ndims = (5,)


class _BatchInstanceNorm(_MixNorm, _ChannelNorm):
    _state_keys = ("weight", "bias", "gate", "running_mean", "running_var",
                   "num_batches_tracked")
    _grad_names = ("grad_weight", "grad_bias", "grad_gate")
    _backward_op = staticmethod(A.batch_instance_norm_backward)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        _ChannelNorm.__init__(self, num_features, eps, momentum, affine, track_running_stats,
                              None, dtype, True)
        self.gate = np.ones(self.num_features, _dtype(dtype))
        self.grad_gate = None
        self._place_on(device)

    def clamp_gate(self):
        """Clip the gate into [0, 1] in place, as the reference's training loop does after every
        optimiser step.

        Returns
        -------
        layer
            self.
        """
        if isinstance(self.gate, np.ndarray):
            np.clip(self.gate, 0.0, 1.0, out=self.gate)
        else:
            self.gate.copy_to_device(np.clip(self.gate.copy_to_host(), 0.0, 1.0))
        return self

    def _forward(self, x):
        x = self._check_ndim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__} expects {self.num_features} channels, "
                             f"got shape {x.shape}")
        update = self.training and self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if update and self.momentum is None:  # cumulative moving average
            factor = 1.0 / (self.num_batches_tracked + 1)
        use_buffers = not self.training or self.track_running_stats
        result = A.batch_instance_norm_forward(
            x, self.gate, self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None, self.weight, self.bias,
            self.training or self.running_mean is None, factor, self.eps)
        if update:
            self.num_batches_tracked += 1
        return result


@fill
class BatchInstanceNorm1d(_BatchInstanceNorm):
    """Batch-Instance Normalization of (N, C, L) input (Nam & Kim, NeurIPS 2018).

    ``y = (gate*BN(x) + (1 - gate)*IN(x))*weight + bias``: BatchNorm's parameters, buffers and
    state_dict keys, and the per-channel ``gate`` (ones at first), as the reference
    (hyseob/Batch-Instance-Normalization). Call `clamp_gate` after each optimiser step, as the
    reference does: a forward in training mode refuses a gate outside [0, 1].

    %(batch_instance_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 2)
    >>> layer = nbn.BatchInstanceNorm1d(2, dtype=np.float64)
    >>> y = layer(x)
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.gate -= 0.1 * layer.grad_gate      # an optimiser step
    >>> layer = layer.clamp_gate()
    """
    _ndims = (3,)


@fill
class BatchInstanceNorm2d(_BatchInstanceNorm):
    """Batch-Instance Normalization of (N, C, H, W) input (Nam & Kim, NeurIPS 2018).

    ``y = (gate*BN(x) + (1 - gate)*IN(x))*weight + bias``: BatchNorm's parameters, buffers and
    state_dict keys, and the per-channel ``gate`` (ones at first), as the reference
    (hyseob/Batch-Instance-Normalization). Call `clamp_gate` after each optimiser step, as the
    reference does: a forward in training mode refuses a gate outside [0, 1].

    %(batch_instance_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 1, 2)
    >>> layer = nbn.BatchInstanceNorm2d(2, dtype=np.float64)
    >>> y = layer(x)
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.gate -= 0.1 * layer.grad_gate      # an optimiser step
    >>> layer = layer.clamp_gate()
    """
    _ndims = (4,)


@fill
class BatchInstanceNorm3d(_BatchInstanceNorm):
    """Batch-Instance Normalization of (N, C, D, H, W) input (Nam & Kim, NeurIPS 2018).

    ``y = (gate*BN(x) + (1 - gate)*IN(x))*weight + bias``: BatchNorm's parameters, buffers and
    state_dict keys, and the per-channel ``gate`` (ones at first), as the reference
    (hyseob/Batch-Instance-Normalization). Call `clamp_gate` after each optimiser step, as the
    reference does: a forward in training mode refuses a gate outside [0, 1].

    %(batch_instance_norm_layer)s

    Examples
    --------
    >>> x = np.arange(8.0).reshape(2, 2, 1, 1, 2)
    >>> layer = nbn.BatchInstanceNorm3d(2, dtype=np.float64)
    >>> y = layer(x)
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.gate -= 0.1 * layer.grad_gate      # an optimiser step
    >>> layer = layer.clamp_gate()
    """
    _ndims = (5,)
