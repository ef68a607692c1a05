import os

# The CUDA tests run on a real GPU when there is one, else in Numba's CUDA simulator. The
# choice must be made before numba is imported. Under the simulator, blocks of 8 threads and a
# 4-block target make tiny shapes run the multi-block reductions and partial merges.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    os.environ.setdefault("NUMBANORM_CUDA_THREADS", "8")
    os.environ.setdefault("NUMBANORM_CUDA_TARGET_BLOCKS", "4")

import zlib

import numpy as np
import pytest

# (dtype, rtol, atol): numbanorm sums blocks in the data's dtype, merges them in float64 and
# runs the elementwise passes in the data's dtype around a split (float32 + remainder) mean, so
# float32 results sit within a few float32 ulps of the float64 oracle.
TOLERANCES = {
    np.float32: (2e-6, 2e-6),
    np.float64: (1e-12, 1e-12),
}


@pytest.fixture
def rng(request):
    # Seeded per test, so every test is reproducible on its own.
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


def assert_close(actual, expected, dtype, scale=1.0, name=""):
    rtol, atol = TOLERANCES[dtype]
    assert actual is not None, name
    assert actual.dtype == np.dtype(dtype), (name, actual.dtype)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol,
                               atol=atol * scale, err_msg=name)
