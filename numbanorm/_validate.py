"""All argument checks of the public API. Every check raises before any kernel runs, with a
TypeError (wrong kind of object or dtype) or ValueError (wrong value or shape) naming the
argument and what was expected."""
import math
import numbers

import numpy as np

from . import _device
from ._dtypes import ACCEPTED, is_float, is_half

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES


SPARSE_TAKERS = ("normalize, moments, Moments.update, Normalizer, "
                 "StandardScaler(with_mean=False), MaxAbsScaler and maxabs_scale")


def not_sparse(x, name, why="it would fill in the zeros"):
    """A TypeError for a scipy.sparse x where a function does not take one, saying why and
    which functions do."""
    if _device.is_sparse(x):
        raise TypeError(f"{name} is a scipy.sparse matrix, which this function does not take: "
                        f"{why}. The scaling-only forms keep zeros zero and take sparse input: "
                        f"{SPARSE_TAKERS}; or pass {name}.toarray()")


def sparse_matrix(x, name, formats=("csr", "csc")):
    """The scipy.sparse x as the data family takes it: 2-d, in one of `formats` (others, COO,
    LIL, DIA, BSR, DOK, converted once to formats[0], as scikit-learn's accept_sparse does; the
    *_matrix or *_array class kept); float32 and float64 data as they are, integers, booleans
    and long double as float64 (a copy); complex refused."""
    if len(x.shape) != 2:
        raise ValueError(f"{name} must be a 2-d sparse matrix, got shape {x.shape}")
    dt = np.dtype(x.dtype)
    if dt.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {dt}")
    if dt.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {dt}")
    if x.format not in formats:
        x = x.asformat(formats[0])
    if dt != _F32 and dt != _F64:
        x = x.astype(np.float64)
    return x


def _ndarray(x, name, what):
    """x as an ndarray (nothing copied for one), a GPU array through device_array, or a
    TypeError saying `what` was expected."""
    if _device.is_device_array(x):
        return device_array(x, name)
    if _device.is_dask_array(x):
        raise TypeError(f"{name} must be {what}, got a Dask array: only the input x (a, X) may "
                        "be one; parameters and gradients are NumPy")
    if x is None or isinstance(x, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be {what}, got {type(x).__name__}")
    not_sparse(x, name, "it takes dense arrays")
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's type
        raise TypeError(f"{name} must be {what}; converting {type(x).__name__} failed: "
                        f"{exc}") from exc


def array(x, name):
    """x as an ndarray of a dtype numbanorm computes on (float16, bfloat16, float32,
    float64). Objects NumPy can convert (lists, PyTorch CPU tensors) are converted; nothing is
    copied for an ndarray."""
    if not isinstance(x, np.ndarray):
        x = _ndarray(x, name, f"a {ACCEPTED} array")
        if not isinstance(x, np.ndarray):
            return x  # a GPU array, checked
    dt = x.dtype
    if dt is not _F32 and dt is not _F64 and not is_float(dt):
        raise TypeError(f"{name} must have dtype {ACCEPTED}, got {dt}")
    return x


def plain_trailing_call(x, normalized_shape, weight, bias, eps, eps_optional):
    """The (L,) normalized shape when a layer_norm/rms_norm call is plainly valid: NumPy x of
    a native float dtype normalised over its last dimension, weight and bias None or NumPy of
    (L,) and x's dtype (or both float32 for 16-bit x), eps a float in [0, inf) (or None where
    eps_optional). Otherwise None,
    and the call takes the full checks of this module, which raise the errors. It only
    accepts, never raises: it spares plain calls the general checks and placement, about 1 us
    of a 4.5 us layer_norm on (1, 8). tests/test_errors.py checks that it accepts nothing the
    full checks refuse."""
    if type(x) is not np.ndarray:
        return None
    dt = x.dtype
    pdt = dt  # the parameters' dtype
    if dt is not _F32 and dt is not _F64:
        if not is_half(dt):
            return None
        p = weight if weight is not None else bias
        if p is not None and type(p) is np.ndarray and p.dtype is _F32:
            pdt = _F32
    if type(normalized_shape) is int:
        shape = (normalized_shape,)
    elif type(normalized_shape) is tuple and len(normalized_shape) == 1 \
            and type(normalized_shape[0]) is int:
        shape = normalized_shape
    else:
        return None
    if not x.ndim or x.shape[-1] != shape[0]:  # also refuses negative sizes
        return None
    if weight is not None and (type(weight) is not np.ndarray or weight.dtype is not pdt
                               or weight.shape != shape):
        return None
    if bias is not None and (type(bias) is not np.ndarray or bias.dtype is not pdt
                             or bias.shape != shape):
        return None
    if eps is None:
        return shape if eps_optional else None
    return shape if type(eps) is float and 0.0 <= eps < math.inf else None


def device_array(x, name):
    """A GPU array (numba, CuPy, PyTorch CUDA) as a zero-copy numba device array: float32 or
    float64 and C-contiguous (the CUDA kernels index contiguous rows)."""
    try:
        d = _device.to_device(x)
    except _device.CudaUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a tensor that requires grad
        raise TypeError(f"{name} lives on a GPU but cannot be read there: {exc}") from exc
    if not is_float(np.dtype(d.dtype)):
        raise TypeError(f"{name} must have dtype {ACCEPTED}, got {d.dtype}")
    if d.size and not d.is_c_contiguous():
        raise ValueError(f"{name} is a non-contiguous GPU array; the CUDA kernels read "
                         "C-contiguous data: make it contiguous first (cupy.ascontiguousarray, "
                         "tensor.contiguous())")
    return d


def optional_array(p, name, shape, dtype):
    """None, or an array of exactly `shape` and x's dtype `dtype`, or float32 when x is 16-bit
    (PyTorch's mixed-precision rule; see same_param_dtype for the call's other parameters)."""
    if p is None:
        return None
    p = array(p, name)
    if p.dtype != dtype and not (p.dtype == _F32 and is_half(dtype)):
        allowed = f"the input's dtype {dtype}" + (" or float32" if is_half(dtype) else "")
        raise TypeError(f"{name} must have {allowed}, got {p.dtype}")
    if p.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {p.shape}")
    return p


def same_param_dtype(dtype, params):
    """The parameters of one call (pairs (array or None, name), checked by optional_array)
    all of one dtype, as PyTorch asks: x's dtype, or with 16-bit x all float32."""
    if not is_half(dtype):
        return  # optional_array allowed x's dtype alone
    first = None
    for p, name in params:
        if p is None:
            continue
        if first is None:
            first = (p.dtype, name)
        elif p.dtype != first[0]:
            raise TypeError(f"{name} must have the dtype of {first[1]}, {first[0]}: a call's "
                            f"parameters are all in the input's dtype {dtype} or all float32, "
                            f"got {p.dtype}")


def running_buffer(buf, name, num_features, dtype, will_update):
    """None or a (num_features,) buffer of x's dtype; writeable ndarray when it is updated."""
    if buf is None:
        return None
    if will_update and not (isinstance(buf, np.ndarray) or _device.is_device_array(buf)):
        raise TypeError(f"{name} must be a NumPy (or GPU) array to be updated in place, "
                        f"got {type(buf).__name__}")
    buf = optional_array(buf, name, (num_features,), dtype)
    if will_update and isinstance(buf, np.ndarray) and not buf.flags.writeable:
        raise ValueError(f"{name} is read-only but training mode updates it in place; pass a "
                         "writeable array, or running buffers of None")
    return buf


def channel_params(x, weight, bias, running_mean, running_var, will_update):
    """The per-channel parameters of an (N, C, ...) op checked: weight, bias and the running
    buffers None or (C,) arrays of x's dtype (float32 too for 16-bit x, all of one dtype), the
    buffers writeable where they will be updated, and given together."""
    C = x.shape[1]
    weight = optional_array(weight, "weight", (C,), x.dtype)
    bias = optional_array(bias, "bias", (C,), x.dtype)
    running_mean = running_buffer(running_mean, "running_mean", C, x.dtype, will_update)
    running_var = running_buffer(running_var, "running_var", C, x.dtype, will_update)
    if is_half(x.dtype):
        same_param_dtype(x.dtype, ((weight, "weight"), (bias, "bias"),
                                   (running_mean, "running_mean"),
                                   (running_var, "running_var")))
    if (running_mean is None) != (running_var is None):
        given, missing = (("running_mean", "running_var") if running_var is None
                          else ("running_var", "running_mean"))
        raise ValueError(f"running_mean and running_var must be given together (or both "
                         f"None), got {given} and {missing}=None")
    return weight, bias, running_mean, running_var


def channel_axis(axis, x):
    """The channel axis of an (N, C, *spatial) op: 1 (PyTorch's layout, the default) or the
    last (-1 or ndim - 1: (N, *spatial, C), as Keras and Flax), as 1 or ndim - 1."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be an int (1 or -1), got {type(axis).__name__}")
    axis = int(axis)
    if axis in (1, -1, x.ndim - 1) and -x.ndim <= axis < x.ndim:
        return axis % x.ndim
    raise ValueError(f"channel_axis must be 1 (channels first, (N, C, *spatial)) or -1 "
                     f"(channels last, (N, *spatial, C)) for {x.ndim}-d x, got {axis}")


def residual_args(x, residual, residual_dtype):
    """(residual, h's dtype) of a fused residual add: residual an array of x's shape (NumPy, or
    a GPU array where x is one) and of x's dtype, or of residual_dtype when given (float32 for
    16-bit x: flash-attn's residual_in_fp32; x's own dtype otherwise), which h is stored in."""
    residual = array(residual, "residual")
    if isinstance(x, np.ndarray) and not isinstance(residual, np.ndarray):
        raise ValueError("residual is on the GPU but x is a NumPy array: pass device='cuda' "
                         "to run on the GPU, or a NumPy residual")
    if residual_dtype is None:
        h_dtype = x.dtype
    else:
        try:
            h_dtype = np.dtype(residual_dtype)
        except TypeError:
            raise TypeError(f"residual_dtype must be a dtype, got {residual_dtype!r}") from None
        allowed = (x.dtype, np.dtype(np.float32)) if is_half(x.dtype) else (x.dtype,)
        if h_dtype not in allowed:
            raise ValueError(f"residual_dtype must be {' or '.join(map(str, allowed))} for "
                             f"{x.dtype} x (h holds the sum in the dtype x is computed in), "
                             f"got {h_dtype}")
    if tuple(residual.shape) != tuple(x.shape):
        raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got "
                         f"{tuple(residual.shape)}")
    if residual.dtype not in (x.dtype, h_dtype):
        want = x.dtype if h_dtype == x.dtype else f"{x.dtype} or {h_dtype}"
        raise TypeError(f"residual must have dtype {want} (x's, or residual_dtype), got "
                        f"{residual.dtype}")
    return residual, h_dtype


def add_outputs(out, residual_out, x, residual, h_dtype, plain):
    """out (y: x's shape and dtype) and residual_out (h: x's shape, h's dtype) checked: each an
    array on x's side (NumPy, or GPU for GPU x), writeable, that is exactly x or exactly
    residual (plain functions only: the in-place pattern out=x, residual_out=residual) or
    overlaps neither; never overlapping each other (y and h are written from the same row)."""
    on_gpu = not isinstance(x, np.ndarray)
    for a, name, dt in ((out, "out", x.dtype), (residual_out, "residual_out", h_dtype)):
        if a is None:
            continue
        a = _output_side(a, x, name)
        if a.dtype != dt:
            raise TypeError(f"{name} must have dtype {dt}, got {a.dtype}")
        if tuple(a.shape) != tuple(x.shape):
            raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got "
                             f"{tuple(a.shape)}")
        if not on_gpu and not a.flags.writeable:
            raise ValueError(f"{name} is read-only")
        for b, b_name in ((x, "x"), (residual, "residual")):
            if on_gpu and isinstance(b, np.ndarray):
                continue  # a NumPy residual is copied over
            overlap, same = _overlap(a, b, on_gpu)
            if overlap and not (plain and same and (on_gpu or a.strides == b.strides)):
                raise ValueError(
                    f"{name} overlaps {b_name}: pass {b_name} itself for an in-place result "
                    f"(add_layer_norm/add_rms_norm only; *_forward keeps the inputs for the "
                    f"backward pass), or a separate array")
    if out is not None and residual_out is not None and _overlap(out, residual_out, on_gpu)[0]:
        raise ValueError("out and residual_out overlap: y and h need memory of their own")


def saved_record(saved, kind, ops):
    """saved is a `kind` record (Saved, MixSaved, ScalingSaved) from one of the forwards ops
    (names; the first is the one the error names)."""
    if not isinstance(saved, kind):
        raise TypeError(f"saved must be the record returned by {ops[0]}_forward, "
                        f"got {type(saved).__name__}")
    if saved.op not in ops:
        raise TypeError(f"saved comes from {saved.op}_forward, not {ops[0]}_forward")


def dy_side(dy, where):
    """dy on the side its forward ran: NumPy for a CPU forward (or a device='cuda' forward of
    NumPy x), a GPU array for a GPU forward. Returns whether dy is on the GPU."""
    on_gpu = _device.is_device_array(dy)
    if not where.gpu and on_gpu:
        raise ValueError("dy is on the GPU but the forward ran on the CPU: pass a NumPy dy")
    if where.gpu and not where.host_io and not on_gpu:
        raise ValueError("dy is a NumPy array but the forward ran on the GPU: pass a GPU dy")
    return on_gpu


def ndim_at_least(x, name, k, what):
    if x.ndim < k:
        raise ValueError(f"{name} must have at least {k} dimensions ({what}), got shape {x.shape}")


def eps(value, name="eps"):
    if type(value) is float and value >= 0.0 and value != math.inf:  # the common case, fast
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def momentum(value, allow_none=False, name="momentum"):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1]"
                        + (" or None" if allow_none else "") + f", got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def finite_real(value, name):
    """A finite real number (not a bool) as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def normalized_shape(shape, name="normalized_shape"):
    if type(shape) is int and shape >= 0:  # the common cases, fast
        return (shape,)
    if type(shape) is tuple and len(shape) == 1 and type(shape[0]) is int and shape[0] >= 0:
        return shape
    if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, "
                        f"got {type(shape).__name__}") from None
    for s in shape:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
            raise TypeError(f"{name} must contain ints, got {shape!r}")
        if s < 0:
            raise ValueError(f"{name} must contain sizes >= 0, got {shape!r}")
    if not shape:
        raise ValueError(f"{name} must name at least one dimension")
    return tuple(int(s) for s in shape)


def trailing_shape(x, shape, name="normalized_shape"):
    k = len(shape)
    if x.ndim < k or x.shape[x.ndim - k:] != shape:
        raise ValueError(f"{name} {shape} must match the trailing dimensions of x, "
                         f"got x of shape {x.shape}")


def out_array(out, x, may_alias, name="out", x_name="the input", also=None):
    """None, or a writeable array of x's shape and dtype on x's side (NumPy or GPU). `out` may
    be x itself (in place) when may_alias, never a partial overlap with x; it may not overlap
    `also` at all: None, or (an array on x's side that the same call still reads, the words
    naming it). name and x_name are the words the errors use for out and x."""
    if out is None:
        return None
    if _device.is_dask_array(x):
        raise ValueError(_NO_LAZY_OUT)
    on_gpu = not isinstance(x, np.ndarray)
    arr = _output_side(out, x, name)
    if arr.dtype != x.dtype:
        raise TypeError(f"{name} must have {x_name}'s dtype {x.dtype}, got {arr.dtype}")
    if arr.shape != x.shape:
        raise ValueError(f"{name} must have {x_name}'s shape {x.shape}, got {arr.shape}")
    if not on_gpu and not arr.flags.writeable:
        raise ValueError(f"{name} is read-only")
    overlap, same = _overlap(arr, x, on_gpu)
    if overlap and not (may_alias and same):
        if name == "out":
            raise ValueError(
                "out overlaps the input: pass out=x exactly for an in-place result (plain "
                "functions only; *_forward keeps x for the backward pass), or a separate array")
        raise ValueError(f"{name} overlaps {x_name}: pass a separate array")
    if also is not None and _overlap(arr, also[0], on_gpu)[0]:
        raise ValueError(f"{name} overlaps {also[1]}: pass a separate array")
    return out


def _output_side(out, x, name):
    """out on x's side: a GPU array (checked by device_array) for GPU x, a NumPy array
    otherwise; a TypeError naming it."""
    if not isinstance(x, np.ndarray):
        if not _device.is_device_array(out):
            raise TypeError(f"{name} must be a GPU array like x, got {type(out).__name__}")
        return device_array(out, name)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    return out


def _overlap(a, b, on_gpu):
    """(whether a and b share memory, whether they start at the same place with the same
    layout)."""
    if on_gpu:
        a0, a1 = _device.span(a)
        b0, b1 = _device.span(b)
        return a0 < b1 and b0 < a1, a0 == b0
    if not np.may_share_memory(a, b):
        return False, False
    return True, (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                  and a.strides == b.strides)


def grad_output(dy, shape, dtype):
    dy = array(dy, "dy")
    if dy.dtype != dtype:
        raise TypeError(f"dy must have the forward input's dtype {dtype}, got {dy.dtype}")
    if dy.shape != tuple(shape):
        raise ValueError(f"dy must have the forward output's shape {tuple(shape)}, "
                         f"got {dy.shape}")
    return dy


# ---------------------------------------------------------------------------------------------
# data normalization (numbanorm.scaling, numbanorm.moments, numbanorm.preprocessing)

NAN_POLICIES = ("propagate", "omit", "raise")


def dask_array(x, name):
    """A Dask array of float16, bfloat16, float32 or float64 as it is, integers and booleans
    as float64 (lazily), complex and other dtypes refused now; chunks of scipy.sparse refused
    (the Dask backend's block steps are the dense CPU host functions)."""
    if _device.is_sparse(getattr(x, "_meta", None)):
        raise TypeError(f"{name} is a Dask array with scipy.sparse chunks, which numbanorm does "
                        "not take: its Dask backend reduces and transforms dense blocks. "
                        "Normalise each block with x.map_blocks(numbanorm.normalize) where a "
                        "block holds whole rows, or fit a scaler with partial_fit on the "
                        "blocks (x.blocks) and transform them with map_blocks")
    dt = np.dtype(x.dtype)
    if is_float(dt):
        return x
    if dt.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {dt}")
    if dt.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers ({ACCEPTED}, integers or "
                        f"booleans), got dtype {dt}")
    return x.astype(np.float64)


_NO_LAZY_OUT = ("out= is not taken with a Dask array: the result is lazy (store it with "
                "dask.array.store or to_zarr)")


def data_array(a, name):
    """a as a float array, as scipy and scikit-learn take it: float16, bfloat16, float32 and
    float64 as they are (nothing copied for an ndarray), integers and booleans converted to
    float64, complex refused; GPU arrays through device_array."""
    if not isinstance(a, np.ndarray):
        a = _ndarray(a, name, "an array of real numbers")
        if not isinstance(a, np.ndarray):
            return a  # a GPU array, checked
    dt = a.dtype
    if is_float(dt):
        return a
    if dt.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {dt}")
    if dt.kind in "biuf":  # (floats left here: long double, the other byte order)
        return a.astype(np.float64)
    if dt.kind == "O":
        try:
            return a.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array of real numbers: {exc}") from None
    raise TypeError(f"{name} must be an array of real numbers ({ACCEPTED}, integers or "
                    f"booleans), got dtype {dt}")


def axes(axis, ndim, name="axis"):
    """axis (None, an int or a tuple of ints; negative counts from the end) as a sorted tuple
    of distinct axes of an ndim-dimensional array; None means all of them."""
    if axis is None:
        return tuple(range(ndim))
    single = isinstance(axis, numbers.Integral) and not isinstance(axis, (bool, np.bool_))
    items = (axis,) if single else axis
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{name} must be None, an int or a tuple of ints, "
                        f"got {type(axis).__name__}") from None
    out = []
    for a in items:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral):
            raise TypeError(f"{name} must contain ints, got {axis!r}")
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} {a} is out of range for an array of {ndim} dimensions")
        a %= ndim
        if a in out:
            raise ValueError(f"{name} {axis!r} repeats axis {a}")
        out.append(a)
    return tuple(sorted(out))


def nan_policy(value):
    if not isinstance(value, str) or value not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {value!r}")
    return value


def ddof(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"ddof must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"ddof must be >= 0, got {value}")
    return int(value)


def feature_range(value):
    """(min, max) of two real numbers with min < max (scikit-learn's feature_range)."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise TypeError(f"feature_range must be a pair (min, max), got {value!r}") from None
    for v in (lo, hi):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"feature_range must hold real numbers, got {value!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValueError("Minimum of desired feature range must be smaller than maximum. "
                         f"Got {value!r}.")
    return lo, hi


def p_norm(value, name="p"):
    """The p of an Lp norm: a real number > 0 (inf allowed)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number > 0, got {type(value).__name__}")
    value = float(value)
    if not value > 0:  # also NaN
        raise ValueError(f"{name} must be > 0 (inf allowed), got {value}")
    return value


def data_out(out, shape, dtype, x=None, name="out"):
    """None, or a writeable NumPy array of `shape` and `dtype`; it may be x itself (in place),
    never a partial overlap with it."""
    if out is None:
        return None
    if _device.is_dask_array(x):
        raise ValueError(_NO_LAZY_OUT)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if x is not None and isinstance(x, np.ndarray):
        overlap, same = _overlap(out, x, False)
        if overlap and not same:
            raise ValueError(f"{name} overlaps the input partially: pass the input itself "
                             "(in place) or a separate array")
    return out
