"""numbanorm on Dask arrays: out of core and on a cluster, with no new concepts.

Pass a Dask array to zscore, minmax_scale, normalize, moments, the scalers' fit /
partial_fit / transform / inverse_transform, or to layer_norm, rms_norm, group_norm,
instance_norm and batch_norm, and get a lazy Dask array (or lazy statistics) back, chunked as
the input; nothing runs until you compute it. Dask is an optional extra (`pip install
numbanorm[dask]`); numbanorm imports it only when it meets a Dask array. The backend itself is
numbanorm.dask._host (how the graphs are built: its docstring).

Threads: inside a Dask task numbanorm uses TASK_THREADS Numba threads (default 1: Dask
already runs one task per core; a task's kernels on all cores as well would put cores x cores
threads on the machine). set_task_threads(n) changes it (or NUMBANORM_DASK_TASK_THREADS); 0
means Numba's default for the process.

Rules that differ from the NumPy path:
- The *_forward functions return (y, None) on Dask arrays: the Dask path is for inference and
  data preparation; backward passes need NumPy (or GPU) arrays.
- Training-mode batch_norm and instance_norm with running buffers raise a ValueError: the
  buffers are updated in place, which a lazy graph cannot do at the time of the call, and
  doing it at compute() would be a side effect no Dask user expects. Take the statistics with
  numbanorm.moments(x, axis=(0, 2, ...)) and update the buffers from them after computing, or
  pass running_mean=running_var=None. Eval mode reads the buffers and is elementwise.
- nan_policy='raise' can only see NaN when the data is read: it raises at compute().
  Everything that can be known before (axes, shapes, dtypes, arguments) raises when the graph
  is built.
"""
import os

from .._device import is_dask_array
from . import _host

__all__ = ["is_dask_array", "set_task_threads", "TASK_THREADS"]

_host.TASK_THREADS = int(os.environ.get("NUMBANORM_DASK_TASK_THREADS", "1"))
set_task_threads = _host.set_task_threads


def __getattr__(name):
    if name == "TASK_THREADS":  # the backend's current value (set_task_threads changes it)
        return _host.TASK_THREADS
    raise AttributeError(f"module 'numbanorm.dask' has no attribute {name!r}")
