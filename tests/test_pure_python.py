"""The kernels also run as plain Python (NUMBA_DISABLE_JIT=1, for debuggers and coverage
tools): every helper that Numba specialises (like, at, part, borrowed, ...) has a Python
meaning. Run in a subprocess, since the flag must be set before Numba is imported."""
import os
import subprocess
import sys

SCRIPT = r"""
import numpy as np
import numbanorm as nbn
import oracle
from conftest import assert_close

rng = np.random.default_rng(0)
x = (rng.standard_normal((3, 4, 10)) + 2.0).astype(np.float32)
dy = rng.standard_normal(x.shape).astype(np.float32)
w = (1 + 0.1 * rng.standard_normal(4)).astype(np.float32)
cases = [
    (lambda: nbn.layer_norm_forward(x, 10), nbn.layer_norm_backward,
     oracle.layer_norm(x, 10, dy=dy)),
    (lambda: nbn.group_norm_forward(x, 2, w), nbn.group_norm_backward,
     oracle.group_norm(x, 2, w, dy=dy)),
    (lambda: nbn.batch_norm_forward(x, None, None, w, training=True), nbn.batch_norm_backward,
     oracle.batch_norm_train(x, w, dy=dy)),
]
for fwd, bwd, ref in cases:
    y, saved = fwd()
    assert_close(y, ref["y"], np.float32, name="y")
    assert_close(bwd(dy, saved)[0], ref["dx"], np.float32, name="dx")
# 16-bit data through the Python meanings of ld/st (cpu._half): the float32 computation on the
# same values, rounded once
import ml_dtypes
for dt in (np.float16, ml_dtypes.bfloat16):
    xh, dyh = x.astype(dt), dy.astype(dt)
    y, saved = nbn.layer_norm_forward(xh, 10)
    y32, saved32 = nbn.layer_norm_forward(xh.astype(np.float32), 10)
    np.testing.assert_array_equal(y, y32.astype(dt))
    np.testing.assert_array_equal(nbn.layer_norm_backward(dyh, saved)[0],
                                  nbn.layer_norm_backward(dyh.astype(np.float32), saved32)[0]
                                  .astype(dt))
    np.testing.assert_array_equal(nbn.batch_norm(xh, None, None, w, training=True),
                                  nbn.batch_norm(xh.astype(np.float32), None, None, w,
                                                training=True).astype(dt))
print("pure python ok")
"""


def test_kernels_run_without_jit():
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "pure python ok" in run.stdout
