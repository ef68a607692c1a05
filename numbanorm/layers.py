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
from . import functional as F
from ._dtypes import ACCEPTED, is_float

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm"]


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
        self.training = bool(mode)
        return self

    def eval(self):
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
        """Move the parameters and buffers to "cuda" (numba device arrays) or back to "cpu"
        (NumPy arrays); returns the layer. On the GPU the layer takes GPU input, and training
        updates the running buffers in place there. A torch.device("cpu"/"cuda") is taken by
        its type."""
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
        """y for x; keeps the saved statistics for `backward`."""
        y, saved = self._forward(x)
        self._saved = saved
        return y

    def backward(self, dy):
        """dx for the gradient dy of the last forward's output; sets grad_weight, grad_bias."""
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

    def _present_state(self):
        for key in self._state_keys:
            value = getattr(self, key, None)
            if value is not None:
                yield key, value

    def state_dict(self):
        """Copies of the parameters and buffers under PyTorch's key names."""
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
        """Load parameters and buffers (NumPy arrays or PyTorch tensors). Everything is checked
        before anything is written."""
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


class _ChannelNorm(_Norm):
    """Common constructor of the batch and instance norms."""

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, device, dtype,
                 bias):
        super().__init__()
        self.num_features = V.positive_int(num_features, "num_features")
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
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias)

    def _forward(self, x):
        x = self._check_ndim(x)
        update = self.training and self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if update and self.momentum is None:  # cumulative moving average
            factor = 1.0 / (self.num_batches_tracked + 1)
        use_buffers = not self.training or self.track_running_stats
        result = F.batch_norm_forward(
            x, self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None, self.weight, self.bias,
            self.training or self.running_mean is None, factor, self.eps)
        if update:
            self.num_batches_tracked += 1
        return result

    _backward = staticmethod(F.batch_norm_backward)


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) input, as torch.nn.BatchNorm1d."""
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) input, as torch.nn.BatchNorm2d."""
    _ndims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalization of (N, C, D, H, W) input, as torch.nn.BatchNorm3d."""
    _ndims = (5,)


class _InstanceNorm(_ChannelNorm):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias)

    def _forward(self, x):
        x = self._check_ndim(x)
        self._unbatched = x.ndim == self._ndims[0]
        if self._unbatched:
            x = x.reshape((1,) + tuple(x.shape))
        if x.shape[1] != self.num_features:
            message = (f"expected input's size at dim={0 if self._unbatched else 1} to match "
                       f"num_features ({self.num_features}), but got: {x.shape[1]}.")
            if self.affine or self.track_running_stats:
                raise ValueError(message)
            warnings.warn(message, stacklevel=3)
        y, saved = F.instance_norm_forward(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            0.0 if self.momentum is None else self.momentum, self.eps)
        return (y.reshape(tuple(y.shape)[1:]) if self._unbatched else y), saved

    _backward = staticmethod(F.instance_norm_backward)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of (N, C, L) or unbatched (C, L) input, as torch.nn.InstanceNorm1d."""
    _ndims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of (N, C, H, W) or (C, H, W) input, as torch.nn.InstanceNorm2d."""
    _ndims = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """Instance normalization of (N, C, D, H, W) or (C, D, H, W) input, as
    torch.nn.InstanceNorm3d."""
    _ndims = (4, 5)


class LayerNorm(_Norm):
    """Layer normalization over the trailing normalized_shape, as torch.nn.LayerNorm."""

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

    def _extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}{_bias_repr(self)}")


class GroupNorm(_Norm):
    """Group normalization of (N, C, *) input, as torch.nn.GroupNorm."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None,
                 *, bias=True):
        super().__init__()
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
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm expects input of shape (N, {self.num_channels}, *), "
                             f"got {x.shape}")
        return F.group_norm_forward(x, self.num_groups, self.weight, self.bias, self.eps)

    _backward = staticmethod(F.group_norm_backward)

    def _extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}{_bias_repr(self)}")


class RMSNorm(_Norm):
    """RMS normalization over the trailing normalized_shape, as torch.nn.RMSNorm
    (eps=None: np.finfo(x.dtype).eps)."""

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

    def _extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
