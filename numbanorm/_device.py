"""Where data lives, and the one place that imports numba.cuda (lazily: importing numbanorm and
every CPU path work with no GPU, no driver and no numba-cuda).

- `is_device_array(obj)`: exposes `__cuda_array_interface__` (numba device arrays, CuPy,
  PyTorch CUDA tensors), or is a device array of Numba's CUDA simulator.
- `requested(device)`: the device a call asked for: its `device=` argument, else the
  NUMBANORM_DEVICE environment variable, else None (the data decides).
- `cuda()`: the numba.cuda module once a usable GPU (or the simulator) is confirmed, else one
  `CudaUnavailableError` that says what is missing.
- `is_dask_array(x)`, `is_sparse(x)`: Dask arrays, scipy.sparse matrices (without importing
  either).
- `to_device` / `wrap_like`: zero-copy views in, the caller's kind of array out.
"""
import os
import sys

import numpy as np
from numba import config as numba_config

from ._config import DEVICE_ENV, __version__

DEVICES = ("cpu", "cuda")


class CudaUnavailableError(RuntimeError):
    """The GPU path was asked for but cannot run here (no GPU, driver or numba-cuda).

    Raised by a call with ``device='cuda'`` (or a layer's ``to('cuda')``) where Numba's CUDA
    target cannot run kernels; the message says what is missing. A RuntimeError.

    Examples
    --------
    >>> issubclass(nbn.CudaUnavailableError, RuntimeError)
    True
    """


_state = {}


def _simulated():
    return bool(numba_config.ENABLE_CUDASIM)


def cuda():
    """numba.cuda, once it can run kernels; raises CudaUnavailableError otherwise."""
    module = _state.get("cuda")
    if module is not None:
        return module
    try:
        from numba import cuda as module
    except Exception as exc:  # noqa: BLE001 - any import failure means the same to the user
        raise CudaUnavailableError(
            f"numbanorm's CUDA path needs numba's CUDA target, which failed to import ({exc}); "
            "install it with `pip install numbanorm[cuda]` (numba-cuda)") from exc
    try:
        available = module.is_available()
    except Exception as exc:  # noqa: BLE001
        raise CudaUnavailableError(f"numba.cuda cannot reach a GPU: {exc}") from exc
    if not available:
        raise CudaUnavailableError(
            "numbanorm's CUDA path needs an NVIDIA GPU with a working driver, and numba found "
            "none (numba.cuda.is_available() is False); run on the CPU (NumPy input), or set "
            "NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's CUDA simulator")
    _state["cuda"] = module
    return module


def is_device_array(obj):
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    if _simulated() and type(obj).__name__ == "FakeCUDAArray":
        return True
    return False


def is_dask_array(x):
    """Whether x is a Dask array, checked without importing Dask (numbanorm.dask runs it); an
    ndarray is answered first (0.03 us, against 0.1 us for the module name)."""
    return type(x) is not np.ndarray and type(x).__module__.startswith("dask.") and hasattr(
        x, "chunks") and hasattr(x, "dask")


def is_sparse(x):
    """Whether x is a scipy.sparse matrix or array, checked without importing scipy (a sparse
    matrix cannot exist unless scipy.sparse was imported); an ndarray is answered first."""
    if type(x) is np.ndarray:
        return False
    mod = sys.modules.get("scipy.sparse")
    return mod is not None and mod.issparse(x)


def _env_device():
    """The DEVICE_ENV variable, read on every call (a program may set it after import). Where
    CPython exposes os.environ's underlying dict, it is read directly: os.environ.get of an
    unset variable raises and catches a KeyError inside, 0.7 us per call, a fifth of a tiny
    layer_norm's whole host time."""
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict) and _ENV_KEY is not None:
        raw = data.get(_ENV_KEY)
        return None if raw is None else os.environ.decodevalue(raw)
    return os.environ.get(DEVICE_ENV)


try:
    _ENV_KEY = os.environ.encodekey(DEVICE_ENV)
except AttributeError:  # not CPython's os._Environ
    _ENV_KEY = None


def requested(device):
    """None, "cpu" or "cuda" (a device= argument wins over the environment variable)."""
    if device is None:
        device = _env_device() or None
        name = f"the {DEVICE_ENV} environment variable"
    else:
        name = "device"
    if device is None:
        return None
    if not isinstance(device, str) or device.lower() not in DEVICES:
        raise ValueError(f"{name} must be 'cpu' or 'cuda' (or None), got {device!r}")
    return device.lower()


def to_device(obj):
    """A numba device array for a device array of any library (zero-copy), or a copy of a
    host array on the device."""
    cu = cuda()
    if type(obj).__name__ in ("DeviceNDArray", "FakeCUDAArray", "MappedNDArray"):
        return obj
    if hasattr(obj, "__cuda_array_interface__"):
        return cu.as_cuda_array(obj)
    return cu.to_device(obj)


def span(d):
    """(first byte, end) of a C-contiguous device array's memory."""
    if hasattr(d, "__cuda_array_interface__"):
        start = d.__cuda_array_interface__["data"][0]
    else:  # the simulator keeps a NumPy array inside
        start = d._ary.__array_interface__["data"][0]
    return start, start + d.size * d.dtype.itemsize


def wrap_like(result, like):
    """result (a numba device array) as the kind of array `like` is: CuPy in, CuPy out;
    PyTorch in, PyTorch out; otherwise the numba device array."""
    module = type(like).__module__.split(".")[0]
    if module == "cupy":
        import cupy
        return cupy.asarray(result)
    if module == "torch":
        import torch
        return torch.as_tensor(result, device="cuda")
    return result


def _threading_layer():
    """The threading layer Numba runs parallel kernels on ("omp", "tbb" or "workqueue"): known
    only once a parallel region has run, so a tiny one runs first where none has."""
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region yet in this process
        import numpy
        from .cpu import rows
        rows.count_nonfinite(numpy.zeros((2, 2)), True, numpy.empty(2, numpy.int64))
        return numba.threading_layer()


def info():
    """What numbanorm can use here: versions, threads, the kernel cache and the GPU if any.

    Runs a tiny parallel kernel first where none has run (the threading layer in use is
    known only then). ``numbanorm info`` prints the same.

    Returns
    -------
    dict
        numbanorm, numpy, numba and numba_cuda versions; threads (Numba's thread count);
        threading_layer (the one in use: 'omp', 'tbb' or 'workqueue') and
        threading_layer_requested; kernel_cache (the directory); gpu (its name and compute
        capability, the simulator, or None, with gpu_unavailable saying why).

    Examples
    --------
    >>> facts = nbn.info()
    >>> facts["threading_layer"] in ("omp", "tbb", "workqueue")
    True
    """
    import numba
    import numpy

    facts = {"numbanorm": __version__, "numpy": numpy.__version__,
             "numba": numba.__version__, "threads": numba.get_num_threads(),
             "threading_layer": _threading_layer(),
             "threading_layer_requested": numba_config.THREADING_LAYER}
    from ._cache import location
    facts["kernel_cache"] = location()
    try:
        from importlib.metadata import version
        facts["numba_cuda"] = version("numba-cuda")
    except Exception:  # noqa: BLE001 - not installed
        facts["numba_cuda"] = None
    try:
        cu = cuda()
        if _simulated():
            facts["gpu"] = "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
        else:
            dev = cu.get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
            facts["gpu"] = f"{name} (compute capability {dev.compute_capability})"
    except CudaUnavailableError as exc:
        facts["gpu"] = None
        facts["gpu_unavailable"] = str(exc)
    return facts
