import zlib

import numpy as np
import pytest

# (dtype, rtol, atol): numbanorm computes in float64 and rounds once to the output dtype, so
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
