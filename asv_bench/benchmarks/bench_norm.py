"""asv benchmarks: every op, forward and backward, float32 and float64, at the standard shapes
of `numbanorm bench` and the wide batch_norm shapes (the lists are in numbanorm.bench), on
each backend; float16 and bfloat16 (ml_dtypes, when installed) at each op's first shape.

    cd asv_bench && asv run --python=same            # the current environment
    cd asv_bench && asv continuous HEAD~1 HEAD       # two commits, virtualenv builds
"""
import numpy as np

from numbanorm import bench

# The standard cases and the wide batch_norm ones, plus a float64 twin of each op's first shape.
_CASES = list(bench.STANDARD) + list(bench.WIDE)
for _op in bench.OPS:
    _op, _shape, _ = next(c for c in bench.STANDARD if c[0] == _op)
    for _dtype in ("float64", "float16", "bfloat16"):
        if (_op, _shape, _dtype) not in _CASES:
            _CASES.append((_op, _shape, _dtype))
CASES = {f"{op}-{'x'.join(map(str, shape))}-{dtype}": (op, shape, dtype)
         for op, shape, dtype in _CASES}


def _real_gpu():
    """numba.cuda when a real GPU is present; NotImplementedError (asv: skipped) otherwise."""
    from numbanorm import _device
    try:
        cuda = _device.cuda()
    except _device.CudaUnavailableError as exc:
        raise NotImplementedError(str(exc)) from exc
    if _device._simulated():
        raise NotImplementedError("the CUDA simulator is not worth timing")
    return cuda


class Normalization:
    params = [sorted(CASES), ["forward", "backward"], ["cpu", "cuda"]]
    param_names = ["case", "pass", "backend"]
    timeout = 300

    def setup(self, case, direction, backend):
        op, shape, dtype = CASES[case]
        try:
            dtype = bench.np_dtype(dtype)
        except SystemExit as exc:  # bfloat16 without ml_dtypes
            raise NotImplementedError(str(exc)) from exc
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        pshape = bench._param_shape(op, shape)
        w = np.ones(pshape, dtype)
        b = None if op in bench.NO_BIAS else np.zeros(pshape, dtype)
        sync = None
        if backend == "cuda":
            if op.startswith("add_"):
                raise NotImplementedError("the fused residual add + norm is CPU-only for now")
            cuda = _real_gpu()
            x, dy, w, b = (None if a is None else cuda.to_device(a) for a in (x, dy, w, b))
            sync = cuda.synchronize
        forward, backward, plain = bench.numbanorm_impl(op, x, w, b, dy)
        _, saved = forward()  # JIT compile or cache load, outside the timing
        backward(saved)
        plain()
        call = plain if direction == "forward" else (lambda: backward(saved))
        if sync is None:
            self.call = call
        else:  # the timed call includes the kernels' completion, not just their launch
            self.call = lambda: (call(), sync())

    def time_op(self, case, direction, backend):
        self.call()

    def peakmem_op(self, case, direction, backend):
        self.call()
