"""numbanorm: normalization kernels for NumPy, in Numba: batch, layer, group, instance, RMS and
local response normalization with PyTorch's semantics (channels-last images too, and the fused
residual add + layer/RMS norm of pre-norm Transformers), the adaptive Switchable and
Batch-Instance Normalization, and data normalization for scientific code (zscore,
minmax_scale, normalize, mergeable moments, scikit-learn's scalers), on dense and
scipy.sparse data."""
from . import _config  # noqa: F401  (sets the thread-safe threading layer before any kernel)
from ._config import __version__  # noqa: F401
from .functional import (  # noqa: F401
    Saved,
    add_layer_norm, add_layer_norm_backward, add_layer_norm_forward,
    add_rms_norm, add_rms_norm_backward, add_rms_norm_forward,
    batch_norm, batch_norm_backward, batch_norm_forward,
    group_norm, group_norm_backward, group_norm_forward,
    instance_norm, instance_norm_backward, instance_norm_forward,
    layer_norm, layer_norm_backward, layer_norm_forward,
    local_response_norm, local_response_norm_backward, local_response_norm_forward,
    rms_norm, rms_norm_backward, rms_norm_forward,
)
from .adaptive import (  # noqa: F401
    MixSaved,
    batch_instance_norm, batch_instance_norm_backward, batch_instance_norm_forward,
    switch_norm, switch_norm_backward, switch_norm_forward,
)
from ._device import CudaUnavailableError, info  # noqa: F401
from .scaling import (  # noqa: F401
    ScalingSaved,
    minmax_scale, minmax_scale_backward, minmax_scale_forward,
    normalize, normalize_backward, normalize_forward,
    zscore, zscore_backward, zscore_forward,
)
from .stats import Moments, moments  # noqa: F401
from .layers import (  # noqa: F401
    BatchInstanceNorm1d, BatchInstanceNorm2d, BatchInstanceNorm3d, BatchNorm1d, BatchNorm2d,
    BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm,
    LocalResponseNorm, RMSNorm, SwitchNorm1d, SwitchNorm2d, SwitchNorm3d,
)


_SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "Normalizer", "maxabs_scale")


def __getattr__(name):
    """The scalers, imported on first use: with scikit-learn installed they derive from its
    estimator classes, and importing scikit-learn takes ~1 s that `import numbanorm` should
    not pay."""
    if name in _SCALERS:
        from . import preprocessing
        return getattr(preprocessing, name)
    raise AttributeError(f"module 'numbanorm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SCALERS))
