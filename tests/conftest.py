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


# the dtypes numbanorm takes, as its errors name them (a regular expression)
ACCEPTED = r"float16, bfloat16 \(ml_dtypes\), float32 or float64"


def assert_close(actual, expected, dtype, scale=1.0, name=""):
    rtol, atol = TOLERANCES[dtype]
    assert actual is not None, name
    assert actual.dtype == np.dtype(dtype), (name, actual.dtype)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol,
                               atol=atol * scale, err_msg=name)


# ---------------------------------------------------------------------------------------------
# 16-bit results (float16, ml_dtypes.bfloat16): tests/test_lowp.py, the CUDA 16-bit tests

EPS32 = 2.0 ** -24  # float32's unit roundoff


def ulp16(v, dtype):
    """The spacing of 16-bit `dtype` at |v| (float64): 2^(exponent - mantissa bits), the
    subnormal spacing below the normal range."""
    mant, emin = (10, -14) if dtype == np.float16 else (7, -126)  # float16, bfloat16
    a = np.abs(np.asarray(v, np.float64))
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    return np.exp2(np.maximum(e, emin) - mant)


def assert_half(actual, ref, dtype, scale=None, name=""):
    """actual (16-bit) within one ulp of ref (float64) rounded to 16 bits, plus 8 float32
    ulps of `scale` (default max |ref|): a 16-bit result is the float32 computation rounded
    once, and near zero, where a value comes from cancelling terms, float32's rounding of
    those terms may exceed a 16-bit ulp: that much is allowed, no more."""
    assert actual.dtype == dtype, (name, actual.dtype)
    ref = np.asarray(ref, np.float64)
    r16 = ref.astype(dtype).astype(np.float64)
    a = actual.astype(np.float64)
    if scale is None:
        scale = np.abs(ref).max() if ref.size else 0.0
    allowed = ulp16(np.maximum(np.abs(r16), np.abs(a)), dtype) + 8 * EPS32 * scale
    err = np.abs(a - r16)
    same_nan = np.isnan(a) == np.isnan(r16)
    assert same_nan.all(), name
    bad = ~np.isnan(a) & (err > allowed)
    assert not bad.any(), (f"{name}: {bad.sum()} values beyond 1 ulp, worst "
                           f"{(err / allowed)[bad].max():.2f}x the allowance")


def dx_scale(ref, dy, w=None):
    """The scale of the terms dx cancels: max |rstd*dy*w| (see assert_half)."""
    wmax = 1.0 if w is None else np.abs(w.astype(np.float64)).max()
    return max(np.abs(ref["dx"]).max(), np.abs(ref["rstd"]).max() * wmax *
               np.abs(dy.astype(np.float64)).max())


def half_params(rng, C, dtype, kind):
    """(weight, bias): in x's dtype ('same'), float32 ('mixed'), or None."""
    if kind == "none":
        return None, None
    pdt = dtype if kind == "same" else np.float32
    return ((1 + 0.5 * rng.standard_normal(C)).astype(pdt),
            rng.standard_normal(C).astype(pdt))
