"""Placement: which backend runs a call, and how its arrays get there and back.

`place(x, device)` returns x (validated) and a placement, one of three kinds with one interface:

- `CPU` (a singleton: NumPy x, the CPU kernels): host = numbanorm.cpu._host; arrays stay where
  they are; a result goes into out= as it is, or copied there when out is not C-contiguous.
- `GpuPlace`: device x (numba, CuPy or PyTorch CUDA), or NumPy x sent over by device="cuda"
  (host_io: arrays go over and results come back as NumPy, running buffers included);
  host = numbanorm.cuda._host, imported on first GPU use.
- `DASK` (a singleton: Dask x, a lazy graph of CPU host calls per block): host =
  numbanorm.dask._host, imported on first Dask use; results are lazy Dask arrays, parameters
  stay NumPy, out= and running buffers that training would update are refused.

A public op asks the placement for its arguments (`param`), its input (x itself on the CPU, the
device array `x` on the GPU) and where the kernel writes (`target`), makes one call into
`host`, and hands the result to `deliver`.
"""
import numpy as np

from . import _device
from . import _validate as V
from .cpu import _host as _cpu_host


class _CpuPlace:
    """NumPy arrays, CPU kernels."""

    __slots__ = ()
    gpu = False
    lazy = False
    host_io = False
    host = _cpu_host
    x = None  # the kernels read the caller's x

    @staticmethod
    def param(p, name, updated=False):
        """p (validated): a GPU p with NumPy x is refused by the caller's checks (see
        GpuPlace.param for the GPU side)."""
        if p is not None and not isinstance(p, np.ndarray):
            raise ValueError(f"{name} is on the GPU but x is a NumPy array: pass device='cuda' "
                             f"to run on the GPU, or a NumPy {name}")
        return p

    @staticmethod
    def target(out):
        """out itself when the kernels can write it (C-contiguous), else None (a fresh array,
        copied into out by deliver)."""
        return out if out is not None and out.flags.c_contiguous else None

    @staticmethod
    def data_target(out):
        """out as the data functions take it (they write out's memory in any layout)."""
        return out

    @staticmethod
    def deliver(y, out):
        if out is None or out is y:
            return y
        np.copyto(out, y)
        return out

    @staticmethod
    def gradient(g):
        return g

    @staticmethod
    def grad_input(dy):
        return dy

    @staticmethod
    def stat(a):
        return a

    @staticmethod
    def write_back():
        pass


CPU = _CpuPlace()


class GpuPlace:
    """One GPU call. host_io: NumPy x sent to the GPU by device="cuda" (or
    NUMBANORM_DEVICE=cuda). like: the caller's x, whose kind of array results take. x: the
    device array the kernels read."""

    __slots__ = ("host_io", "like", "x", "host", "_writeback")
    gpu = True
    lazy = False

    def __init__(self, host_io, like, x):
        from .cuda import _host
        self.host_io, self.like, self.x, self.host = host_io, like, x, _host
        self._writeback = []

    def param(self, p, name, updated=False):
        """p (already validated) on the GPU, or a clear error where it can't be."""
        if p is None or not isinstance(p, np.ndarray):
            return p
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

    data_target = target

    def deliver(self, y, out):
        """A device result as the caller's kind of array (into out when given; nothing to copy
        when the kernel wrote into out's memory, see target)."""
        if self.host_io:
            return CPU.deliver(y.copy_to_host(), out)
        if out is not None:
            d = self.target(out)
            if _device.span(d)[0] != _device.span(y)[0]:
                d.copy_to_device(y)
            return out
        return _device.wrap_like(y, self.like)

    def gradient(self, g):
        """A parameter gradient (or None) as the caller's kind of array."""
        return None if g is None else self.deliver(g, None)

    def grad_input(self, dy):
        """dy on the GPU (a NumPy dy of a device="cuda" forward is sent over)."""
        if isinstance(dy, np.ndarray):
            return _device.to_device(np.ascontiguousarray(dy))
        return dy

    def stat(self, a):
        return a.copy_to_host() if self.host_io else a


class _DaskPlace:
    """Dask arrays: a lazy graph whose tasks are CPU host calls, one per block."""

    __slots__ = ()
    gpu = False
    lazy = True
    host_io = False
    x = None

    @property
    def host(self):
        from .dask import _host
        return _host

    @staticmethod
    def param(p, name, updated=False):
        """p (NumPy, validated); a buffer that training would update in place is refused."""
        if p is not None and updated:
            raise ValueError(
                f"training updates {name} in place, which a lazy Dask graph cannot do: pass "
                "running_mean=running_var=None and update the buffers yourself from "
                "numbanorm.moments(x, axis=(0, 2, ...)).compute() (mean, var(ddof=1)), or "
                "compute x first")
        return p

    @staticmethod
    def target(out):
        return None  # out= is refused for Dask x by the checks

    data_target = target

    @staticmethod
    def deliver(y, out):
        return y

    @staticmethod
    def write_back():
        pass


DASK = _DaskPlace()


def place(x, device, name="x", data=False):
    """(x validated on the side it runs, placement). NumPy x runs on the CPU unless
    device='cuda' (or NUMBANORM_DEVICE=cuda) asks for the GPU; GPU x always runs on the GPU;
    Dask x runs as a lazy graph of CPU calls. data: x as the data functions take it (integers
    and booleans converted to float64, as scipy and scikit-learn do)."""
    want = _device.requested(device)
    if _device.is_dask_array(x):
        if want == "cuda":
            raise ValueError(f"{name} is a Dask array, which runs on the CPU, but "
                             "device='cuda' was asked for: map the blocks to the GPU yourself, "
                             "or pass a GPU array")
        return V.dask_array(x, name), DASK
    like = x
    x = V.data_array(x, name) if data else V.array(x, name)
    if not isinstance(x, np.ndarray):
        if want == "cpu":
            raise ValueError(f"{name} is on the GPU but device='cpu' was asked for: copy it "
                             "to the host first")
        return x, GpuPlace(False, like, x)
    if want == "cuda":
        return x, GpuPlace(True, like, _device.to_device(np.ascontiguousarray(x)))
    return x, CPU
