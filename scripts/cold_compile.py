"""Cold-compile time of the CPU kernel set, and warm start-up, in fresh processes.

Runs every op forward and backward in both dtypes on a small (serial-kernel) and a larger
(parallel-kernel) shape, first with an empty Numba cache in a temporary directory (cold: every
kernel compiles), then again with that cache (warm: kernels load from disk). Your own cache is
not touched. Usage: python scripts/cold_compile.py
"""
import os
import subprocess
import sys
import tempfile
import time

WORK = r"""
import numpy as np
import numbanorm as nn
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    for rows in (64, 4096):                      # serial and parallel kernels
        x = rng.standard_normal((rows, 1024)).astype(dt)
        d = np.ones_like(x)
        w, b = np.ones(1024, dt), np.zeros(1024, dt)
        y, s = nn.layer_norm_forward(x, (1024,), w, b); nn.layer_norm_backward(d, s)
        y, s = nn.rms_norm_forward(x, (1024,), w); nn.rms_norm_backward(d, s)
        y, s = nn.batch_norm_forward(x, None, None, w, b, training=True)
        nn.batch_norm_backward(d, s)                                   # columns layout
        x4 = x.reshape(rows, 8, 128)
        y, s = nn.batch_norm_forward(x4, None, None, training=True)
        nn.batch_norm_backward(np.ones_like(x4), s)                    # slabs layout
        y, s = nn.group_norm_forward(x4, 4); nn.group_norm_backward(np.ones_like(x4), s)
        y, s = nn.instance_norm_forward(x4); nn.instance_norm_backward(np.ones_like(x4), s)
"""


def _run(env):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", WORK], env=env, check=True)
    return time.perf_counter() - t


def main():
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = _run(env)
        warm = _run(env)
    print(f"cold compile of the kernel set: {cold:.1f} s; same work from the warm cache: "
          f"{warm:.1f} s (process start-up and import included)")


if __name__ == "__main__":
    main()
