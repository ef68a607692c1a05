"""The floating-point dtypes numbanorm computes in, and how 16-bit data reaches the kernels.

    float32, float64     computed in their own dtype (statistics merged in float64)
    float16, bfloat16    stored in 16 bits, computed in float32: every value is converted to
                         float32 where a kernel reads it, and every result is the float32
                         computation rounded once to 16 bits (round to nearest even)

bfloat16 is ml_dtypes.bfloat16 (an optional dependency: it is recognised by its dtype, never
imported here; a user holding a bfloat16 array has imported it already).

Numba's CPU target has no float16 or bfloat16 type, so 16-bit arrays enter the CPU kernels as
integer views of the same memory, one integer type per format, which the kernels decode
(numbanorm.cpu._half):

    float16   -> int16 view
    bfloat16  -> uint16 view

Inside numbanorm's kernels an int16 or uint16 array is always such a view (never integer
data): `kernel_view` makes them, and nothing else passes 16-bit integers to a kernel.
"""
import numpy as np

F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)

# the integer view of each 16-bit format (see the module docstring), by dtype (filled in as
# formats are met: bfloat16's dtype exists once ml_dtypes is imported)
_VIEW = {F16: np.dtype(np.int16)}

ACCEPTED = "float16, bfloat16 (ml_dtypes), float32 or float64"


_BFLOAT16 = []  # ml_dtypes.bfloat16's dtype, once met


def is_bfloat16(dt):
    """Whether dt is ml_dtypes.bfloat16 (recognised without importing ml_dtypes; its name is a
    Python-level property of NumPy's, ~1 us, so the dtype is remembered once seen)."""
    if dt.kind != "V" or dt.itemsize != 2:
        return False
    if _BFLOAT16:
        return dt is _BFLOAT16[0] or dt == _BFLOAT16[0]
    if dt.name == "bfloat16":
        _BFLOAT16.append(dt)
        return True
    return False


def is_half(dt):
    """Whether dt is one of the 16-bit formats numbanorm takes (float16, bfloat16)."""
    return dt.itemsize == 2 and (dt.kind == "f" and dt.isnative or is_bfloat16(dt))


def is_float(dt):
    """Whether numbanorm computes on arrays of dtype dt (float16, bfloat16, float32, float64,
    in the machine's byte order)."""
    if dt.kind == "f":
        return dt.itemsize in (2, 4, 8) and dt.isnative
    return is_bfloat16(dt)


def compute(dt):
    """The dtype numbanorm computes dt's values in: float32 for the 16-bit formats (and for
    their kernel views), else dt."""
    return F32 if dt.itemsize == 2 else dt


def kernel_view(a):
    """The array a as the CPU kernels take it: a 16-bit array as its integer view (see the
    module docstring), any other array itself. None stays None."""
    if a is None:
        return None
    dt = a.dtype
    if dt.itemsize != 2:
        return a
    view = _VIEW.get(dt)
    if view is None and is_bfloat16(dt):
        view = _VIEW[dt] = np.dtype(np.uint16)
    return a if view is None else a.view(view)


def compute_eps(dt):
    """The machine epsilon of the dtype dt is computed in (float32's for 16-bit dt): the
    resolution the data functions' constant-slice rules (scipy's, scikit-learn's) take."""
    return float(np.finfo(compute(dt)).eps)
