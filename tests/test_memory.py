"""Memory: a forward allocates its output and O(number of groups) besides; x is copied only
when it is not C-contiguous. A backward allocates dx (nothing that size with dx_out=) and
O(groups + parameters). NumPy reports
its allocations to tracemalloc, and the kernels allocate nothing themselves."""
import tracemalloc

import numpy as np
import pytest

import numbanorm as nbn

SHAPE = (16, 32, 16, 16)  # 512 KiB of float32: far above the O(groups) extras
C = SHAPE[1]
OPS = {
    "layer_norm": (lambda x: nbn.layer_norm_forward(x, SHAPE[2:]), nbn.layer_norm_backward),
    "rms_norm": (lambda x: nbn.rms_norm_forward(x, SHAPE[-1]), nbn.rms_norm_backward),
    "group_norm": (lambda x: nbn.group_norm_forward(x, 8), nbn.group_norm_backward),
    "instance_norm": (lambda x: nbn.instance_norm_forward(x), nbn.instance_norm_backward),
    "batch_norm": (lambda x: nbn.batch_norm_forward(
        x, np.zeros(C, x.dtype), np.ones(C, x.dtype), training=True), nbn.batch_norm_backward),
    "batch_norm_nc": (lambda x: nbn.batch_norm_forward(x.reshape(SHAPE[0] * 16, -1),
                                                      training=True), nbn.batch_norm_backward),
}


def _peak_increase(fn, *args):
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    result = fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base, result


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["C", "F"])
def test_forward_and_backward_allocate_only_their_outputs(op, layout):
    forward, backward = OPS[op]
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    if layout == "F":
        x = np.asfortranarray(x)
    dy = np.ones(SHAPE, np.float32)
    y, saved = forward(x)
    backward(dy.reshape(y.shape), saved)  # compile and size the per-thread scratch
    del y, saved
    copies = 0 if layout == "C" else 1
    fwd_bytes, (y, saved) = _peak_increase(forward, x)
    # O(groups): float64 and public statistics per group, plus fixed-size partials
    extra = 64 * 1024 + 40 * saved.rstd.size
    assert fwd_bytes <= (1 + copies) * x.nbytes + extra, fwd_bytes / x.nbytes
    bwd_bytes, grads = _peak_increase(backward, dy.reshape(y.shape), saved)
    assert bwd_bytes <= x.nbytes + extra, bwd_bytes / x.nbytes
    assert grads[0].shape == y.shape
    dx_out = np.empty(y.shape, y.dtype)
    bwd_bytes, grads = _peak_increase(lambda: backward(dy.reshape(y.shape), saved,
                                                       dx_out=dx_out))
    assert bwd_bytes <= extra, bwd_bytes / x.nbytes
    assert grads[0] is dx_out
