"""numbanorm: batch, layer, group, instance and RMS normalization as Numba kernels, with
PyTorch's semantics and NumPy arrays."""
from . import _config  # noqa: F401  (sets the thread-safe threading layer before any kernel)
from .functional import (  # noqa: F401
    Saved,
    batch_norm, batch_norm_backward, batch_norm_forward,
    group_norm, group_norm_backward, group_norm_forward,
    instance_norm, instance_norm_backward, instance_norm_forward,
    layer_norm, layer_norm_backward, layer_norm_forward,
    rms_norm, rms_norm_backward, rms_norm_forward,
)
from ._device import CudaUnavailableError, info  # noqa: F401
from .layers import (  # noqa: F401
    BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d,
    InstanceNorm3d, LayerNorm, RMSNorm,
)

__version__ = "0.1.0"
