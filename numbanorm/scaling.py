"""Data normalization for scientific code: z-score, min-max and Lp scaling along any axes, with
the names, arguments and numbers users know (scipy.stats.zscore,
sklearn.preprocessing.minmax_scale, torch.nn.functional.normalize).

    zscore(a, axis=0, ddof=0, nan_policy='propagate', *, out=None, device=None)
    minmax_scale(X, feature_range=(0, 1), *, axis=0, copy=True, out=None, device=None)
    normalize(x, p=2.0, dim=1, eps=1e-12, *, out=None, device=None)

Each also as NAME_forward(...) -> (y, saved) and NAME_backward(dy, saved) -> dx: the gradient
PyTorch's autograd gives for the same expression, so NumPy training code can put input
standardisation inside its graph.

axis / dim: an int, a tuple of ints (any, not necessarily adjacent), negative values, or None
(all axes). The statistics come from one read of x by the blocked Welford/Chan kernels of the
rows or column geometry (numbanorm._layout maps any axes onto them), merged in float64; the
transform is one elementwise pass in x's dtype, the mean split as in batch_norm so that float32
data far from 0 keeps its precision. No copy of x for the common layouts: reducing the leading
or the trailing axes of a C-contiguous array (or both ends of it: (N, C, H, W) over (0, 2, 3)),
or any axes of a Fortran-ordered one; axes interleaved with kept ones in memory (reduced, kept,
reduced, kept) and strided views are copied once, with the reduced axes last. out= (x's shape
and dtype, may be x itself) is written by the kernel when its memory is laid out like x's,
else filled by one copy.

Integer and boolean input is converted to float64, as scipy and scikit-learn do; complex is
refused; float32 stays float32, and float16 and bfloat16 (ml_dtypes) stay 16-bit: statistics
in float64, the transform computed in float32 and rounded once to 16 bits. Where scipy's and
scikit-learn's rules take the dtype's resolution (constant slices), 16-bit data takes
float32's, the precision it is computed in. On the CPU the backward passes are NumPy
expressions in float64 over the saved input (not kernels); on the GPU, kernels in float64.

Every function places its input once (numbanorm._placement) and calls that backend's data
functions (data_view, data_moments, data_affine, data_norms: the host contract of
numbanorm.cpu._host): NumPy on the CPU kernels, GPU arrays (or NumPy with device='cuda') on
the CUDA kernels, Dask arrays as a lazy graph of CPU calls per block. The finishing arithmetic
on the per-slot statistics (below) is NumPy, and runs lazily on Dask's statistics. The
backward passes go through the backend's data_backward: NumPy expressions on the CPU, kernels
on the GPU (per-slot sums by one read of x and dy, then dx elementwise).
"""
import numpy as np

from . import _device
from . import _validate as V
from ._docs import fill
from ._dtypes import compute, compute_eps
from .stats import place_data, read

__all__ = ["zscore", "zscore_forward", "zscore_backward",
           "minmax_scale", "minmax_scale_forward", "minmax_scale_backward",
           "normalize", "normalize_forward", "normalize_backward", "ScalingSaved"]


class ScalingSaved:
    """What a data-normalization forward (`zscore_forward`, `minmax_scale_forward`,
    `normalize_forward`) keeps for its backward.

    Built by those functions, not by users. Holds a reference to x, as autograd does.

    Attributes
    ----------
    op : str
        'zscore', 'minmax_scale' or 'normalize'.
    stats : dict of ndarray
        The statistics the forward used (float64, keepdims shape), by name: zscore's mean,
        inv_std and count; minmax_scale's data_min, data_max, scale and zero_range;
        normalize's norm.

    Examples
    --------
    >>> z, saved = nbn.zscore_forward(np.array([[1.0], [3.0]]))
    >>> saved.op, sorted(saved.stats)
    ('zscore', ['count', 'inv_std', 'mean'])
    """

    __slots__ = ("_op", "_x", "_stats", "_params", "_axes", "_place")

    def __init__(self, op, x, stats, params, axes, place):
        self._op, self._x, self._stats, self._params, self._axes = op, x, stats, params, axes
        self._place = place

    @property
    def op(self):
        return self._op

    @property
    def stats(self):
        """The statistics the forward used (float64, keepdims shape), by name."""
        return dict(self._stats)

    def __repr__(self):
        return f"ScalingSaved(op={self._op!r}, stats={sorted(self._stats)})"


def _out(out, x, keep):
    """out= checked on x's side: NumPy (any memory layout; it may be x itself), a GPU array
    (C-contiguous, x itself only in the plain functions), refused for Dask x."""
    if isinstance(x, np.ndarray):
        return V.data_out(out, x.shape, x.dtype, x)
    return V.out_array(out, x, may_alias=not keep)


def _finish(op, x, where, view, mean, scale, shift, out, keep, stats, params):
    """y = (x - mean)*scale + shift per slot on x's backend, delivered (into out, as the
    caller's kind of array), and the saved record when keep (not on Dask)."""
    y = where.deliver(where.host.data_affine(view, mean, scale, shift, where.data_target(out)),
                      out)
    if not keep or where.lazy:
        return y, None
    stats = {k: view.keep(v) for k, v in stats.items()}
    return y, ScalingSaved(op, x, stats, params, view.axes, where)


# ---------------------------------------------------------------------------------------------
# zscore

def _zscore(a, axis, ddof, nan_policy, out, keep, device):
    V.not_sparse(a, "a", "z-scores centre the data, which fills in the zeros")
    x, where, axes = place_data(a, axis, device)
    ddof = V.ddof(ddof)
    nan_policy = V.nan_policy(nan_policy)
    out = _out(out, x, keep)
    view = read(x, where, axes)
    count, mean, m2, *_ = where.host.data_moments(view, nan_policy, False)
    dof = count - ddof
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.where(dof > 0, m2 / np.where(dof > 0, dof, 1.0), np.nan))
        mean = np.where(count > 0, mean, np.nan)
        # scipy's rule: a slice whose std is within the dtype's resolution of its mean is
        # constant, and its z-scores are NaN
        # (1/std of a 0 std is never taken: on Dask the expression runs later, outside this
        # errstate, and would warn from inside the graph)
        inv = np.where(std <= np.abs(compute_eps(x.dtype) * mean), np.nan,
                       1.0 / np.where(std == 0, 1.0, std))
    return _finish("zscore", x, where, view, mean, inv, 0.0, out, keep,
                   dict(mean=mean, inv_std=inv, count=count),
                   dict(ddof=ddof, nan_policy=nan_policy))


@fill
def zscore(a, axis=0, ddof=0, nan_policy="propagate", *, out=None, device=None):
    """z-scores (a - mean)/std along `axis`, as ``scipy.stats.zscore``.

    Parameters
    ----------
    a : array_like
        NumPy (any float dtype: float16, bfloat16, float32, float64; integers are converted to
        float64 as scipy does), a GPU array, or a Dask array (a lazy result).
    axis : int, tuple of int or None, default 0
        The axes the statistics run over; None: the whole array. (scipy takes an int or None.)
    ddof : int, default 0
        Degrees of freedom of the std: sqrt(M2/(n - ddof)).
    nan_policy : {'propagate', 'omit', 'raise'}, default 'propagate'
        'propagate': a NaN makes its whole slice NaN. 'omit': NaN is left out of the
        statistics and kept in place in the output. 'raise': a ValueError if a holds NaN.
    %(out)s
    %(device)s

    Returns
    -------
    z : ndarray
        a's shape and (float) dtype. A slice whose std is within the dtype's resolution of its
        mean (a constant slice) gives NaN, as scipy.

    %(raises)s

    See Also
    --------
    zscore_forward, zscore_backward, StandardScaler, moments

    Notes
    -----
    The mean and M2 come from one read of the data by a blocked Welford/Chan reduction,
    merged in float64, so float32 data keeps its accuracy where its mean is far from 0
    against its spread, and scipy's float32 result can be off by much more than numbanorm's.
    ``python scripts/float32_references.py``: on (100000, 8) float32 columns of means up to
    1000 and stds down to 0.17 with 1% NaN (nan_policy='omit'), scipy's z-scores were off by
    up to 3.6 and numbanorm's by 4.8e-7 from the float64 result of the same input.

    Examples
    --------
    >>> a = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 60.0]])
    >>> nbn.zscore(a).round(4)
    array([[-1.2247, -0.9258],
           [ 0.    , -0.4629],
           [ 1.2247,  1.3887]])
    >>> nbn.zscore(np.array([1.0, np.nan, 3.0]), nan_policy="omit")
    array([-1., nan,  1.])
    """
    return _zscore(a, axis, ddof, nan_policy, out, False, device)[0]


@fill
def zscore_forward(a, axis=0, ddof=0, nan_policy="propagate", *, out=None, device=None):
    """`zscore` returning what `zscore_backward` needs as well.

    Parameters
    ----------
    a, axis, ddof, nan_policy
        As `zscore`.
    %(out)s
    %(device)s

    Returns
    -------
    z : ndarray
        As `zscore`.
    saved : ScalingSaved or None
        The statistics and what the backward needs (None for a Dask a).

    %(raises)s

    See Also
    --------
    zscore, zscore_backward

    Examples
    --------
    >>> z, saved = nbn.zscore_forward(np.array([1.0, 2.0, 3.0]))
    >>> saved.stats["mean"], saved.stats["inv_std"].round(4)
    (array([2.]), array([1.2247]))
    """
    return _zscore(a, axis, ddof, nan_policy, out, True, device)


@fill
def zscore_backward(dy, saved):
    """The gradient of a `zscore_forward`, as PyTorch's autograd gives it.

    With y the z-scores, g = dy and n the values of a slice that entered the statistics:
    ``dx = (g - mean(g) - y*sum(g*y)/(n - ddof))/std``; NaN where a is NaN (nan_policy='omit').

    Parameters
    ----------
    dy : ndarray
        The gradient of z: z's shape.
    saved : ScalingSaved
        The record `zscore_forward` returned.

    Returns
    -------
    dx : ndarray
        a's shape and dtype.

    %(raises_data_backward)s

    See Also
    --------
    zscore_forward

    Examples
    --------
    >>> z, saved = nbn.zscore_forward(np.array([1.0, 2.0, 3.0]))
    >>> nbn.zscore_backward(np.array([1.0, 0.0, 0.0]), saved).round(4)
    array([ 0.2041, -0.4082,  0.2041])
    """
    return _backward(dy, saved, "zscore")


# ---------------------------------------------------------------------------------------------
# minmax_scale

def _minmax(X, feature_range, axis, copy, out, keep, device):
    # (refused even where a feature's minimum and feature_range[0] are both 0, the one case
    # that keeps zeros zero: whether the result could stay sparse would depend on the data)
    V.not_sparse(X, "X", "min-max scaling shifts each feature by its minimum, which fills in "
                 "the zeros wherever that minimum is not 0 (maxabs_scale scales to [-1, 1] "
                 "without a shift)")
    x, where, axes = place_data(X, axis, device, "X")
    lo_r, hi_r = V.feature_range(feature_range)
    if not copy and out is None and x is X and not where.lazy:
        out = X  # scikit-learn's copy=False: in place where X is already a float array
    out = _out(out, x, keep)
    view = read(x, where, axes)
    _, _, _, dmin, dmax, nans = where.host.data_moments(view, "omit", True, False)
    empty = nans == view.count  # no value but NaN: NaN statistics, as np.nanmin's
    dmin = np.where(empty, np.nan, dmin)
    dmax = np.where(empty, np.nan, dmax)
    if not where.lazy and (np.isinf(dmin).any() or np.isinf(dmax).any()):
        raise ValueError("X contains infinity, which has no finite range to scale by (as "
                         "scikit-learn's minmax_scale refuses it: 'Input contains infinity'); "
                         "nothing was written")
    scale, zero = _minmax_scale(dmin, dmax, (lo_r, hi_r), x.dtype)
    return _finish("minmax_scale", x, where, view, dmin, scale, lo_r, out, keep,
                   dict(data_min=dmin, data_max=dmax, scale=scale, zero_range=zero),
                   dict(feature_range=(lo_r, hi_r)))


def _minmax_scale(dmin, dmax, feature_range, dtype):
    """scikit-learn's scale_ and whether each range counts as zero: a range below 10 eps of
    the data's dtype is taken as 1 (its _handle_zeros_in_scale), so constant features map to
    feature_range[0]."""
    data_range = dmax - dmin
    with np.errstate(invalid="ignore"):
        zero = data_range.astype(compute(dtype)) < 10 * compute_eps(dtype)
    return (feature_range[1] - feature_range[0]) / np.where(zero, 1.0, data_range), zero


@fill
def minmax_scale(X, feature_range=(0, 1), *, axis=0, copy=True, out=None, device=None):
    """Each slice along `axis` scaled to feature_range, as ``sklearn.preprocessing.minmax_scale``.

    ``y = (X - min)/(max - min)*(hi - lo) + lo``, with NaN left out of min and max and kept in the
    output, and constant slices mapped to lo (scikit-learn's rule: a range below 10 eps of
    the dtype counts as 1).

    Parameters
    ----------
    X : array_like
        NumPy, GPU or Dask array (dense: a shift fills in a sparse matrix's zeros; see
        `maxabs_scale`).
    feature_range : tuple (lo, hi), default (0, 1)
        lo < hi, finite.
    axis : int, tuple of int or None, default 0
        The axes the minimum and maximum run over (scikit-learn takes 0 or 1).
    copy : bool, default True
        False scales X in place when it is a float array, as scikit-learn's copy=False.
    %(out)s
    %(device)s

    Returns
    -------
    y : ndarray
        X's shape and (float) dtype.

    %(raises)s
        X holding +inf or -inf is refused (there is no finite range to scale by), as
        scikit-learn refuses it, before anything is written.

    See Also
    --------
    minmax_scale_forward, MinMaxScaler

    Examples
    --------
    >>> X = np.array([[1.0, 10.0], [2.0, 20.0], [5.0, 20.0]])
    >>> nbn.minmax_scale(X)
    array([[0.  , 0.  ],
           [0.25, 1.  ],
           [1.  , 1.  ]])
    >>> nbn.minmax_scale(X, feature_range=(-1, 1), axis=1)
    array([[-1.,  1.],
           [-1.,  1.],
           [-1.,  1.]])
    """
    return _minmax(X, feature_range, axis, copy, out, False, device)[0]


@fill
def minmax_scale_forward(X, feature_range=(0, 1), *, axis=0, out=None, device=None):
    """`minmax_scale` returning what `minmax_scale_backward` needs as well.

    Parameters
    ----------
    X, feature_range, axis
        As `minmax_scale`.
    %(out)s
    %(device)s

    Returns
    -------
    y : ndarray
        As `minmax_scale`.
    saved : ScalingSaved or None
        The statistics (data_min, data_max, scale) and what the backward needs (None for a
        Dask X).

    %(raises)s

    See Also
    --------
    minmax_scale, minmax_scale_backward

    Examples
    --------
    >>> y, saved = nbn.minmax_scale_forward(np.array([1.0, 2.0, 5.0]))
    >>> saved.stats["data_min"], saved.stats["data_max"]
    (array([1.]), array([5.]))
    """
    return _minmax(X, feature_range, axis, True, out, True, device)


@fill
def minmax_scale_backward(dy, saved):
    """The gradient of a `minmax_scale_forward`, with PyTorch's amin/amax rule at ties.

    The gradient of the min (or max) is shared evenly by every value equal to it. With
    s = scale, t = (x - min)/(max - min) and g = dy:
    ``dx = s*g - s*[x == min]/k_min*sum(g*(1 - t)) - s*[x == max]/k_max*sum(g*t)`` (a
    constant slice, whose range counts as 1: ``dx = s*(g - [x == min]/k_min*sum(g))``); NaN
    where x is NaN.

    Parameters
    ----------
    dy : ndarray
        The gradient of y: y's shape.
    saved : ScalingSaved
        The record `minmax_scale_forward` returned.

    Returns
    -------
    dx : ndarray
        X's shape and dtype.

    %(raises_data_backward)s

    See Also
    --------
    minmax_scale_forward

    Examples
    --------
    >>> y, saved = nbn.minmax_scale_forward(np.array([1.0, 2.0, 5.0]))
    >>> nbn.minmax_scale_backward(np.array([0.0, 1.0, 0.0]), saved)
    array([-0.1875,  0.25  , -0.0625])
    """
    return _backward(dy, saved, "minmax_scale")


# ---------------------------------------------------------------------------------------------
# normalize

def _normalize(x, p, dim, eps, out, keep, device):
    if _device.is_sparse(x):
        if keep:
            raise TypeError("x is a scipy.sparse matrix: normalize_forward and normalize_backward "
                            "take dense arrays (the sparse backward is not built); use "
                            "normalize(x) for the sparse result")
        return _sparse_normalize(x, p, dim, eps, out, device), None
    x, where, axes = place_data(x, dim, device, "x", "dim")
    p = V.p_norm(p)
    eps = V.eps(eps)
    out = _out(out, x, keep)
    view = read(x, where, axes)
    norm = where.host.data_norms(view, p)
    with np.errstate(divide="ignore"):
        scale = 1.0 / np.maximum(norm, eps)
    return _finish("normalize", x, where, view, np.zeros_like(scale), scale, 0.0, out, keep,
                   dict(norm=norm), dict(p=p, eps=eps))


def _sparse_normalize(x, p, dim, eps, out, device):
    """normalize of a scipy.sparse x: a new matrix of x's class and format (COO, LIL, DIA, BSR
    and DOK come back as CSR, converted once), same sparsity pattern (explicit zeros stay
    stored), data = x/max(||x||_p, eps) per row (dim=1), column (dim=0) or over the whole
    matrix (dim=(0, 1) or None)."""
    if out is not None:
        raise TypeError("out= is not taken with a scipy.sparse x: the result is a new sparse "
                        "matrix with x's sparsity pattern")
    if _device.requested(device) == "cuda":
        raise ValueError("x is a scipy.sparse matrix, which runs on the CPU, but device='cuda' "
                         "was asked for")
    x = V.sparse_matrix(x, "x")
    axes = V.axes(dim, 2, "dim")
    p = V.p_norm(p)
    eps = V.eps(eps)
    from . import _sparse
    if len(axes) == 1:
        return _sparse.normalized(x, axes[0], p, eps)[0]
    norm = _sparse.norms(x, None, p, "x")  # the whole matrix
    scale = np.full(x.shape[0], 1.0 / np.maximum(norm[0], eps))
    return _sparse.scaled(x, 0, scale, name="x")[0]


@fill
def normalize(x, p=2.0, dim=1, eps=1e-12, *, out=None, device=None):
    """``x/max(||x||_p, eps)`` along `dim`, as ``torch.nn.functional.normalize``.

    Parameters
    ----------
    x : array_like
        NumPy, GPU or Dask array, or a scipy.sparse matrix or array (CSR, CSC; other formats
        converted to CSR once; 2-d), which gives a sparse result of its class with its
        sparsity pattern.
    p : float, default 2.0
        The norm's exponent, > 0: 1, 2, inf or any other.
    dim : int, tuple of int or None, default 1
        The axes of each norm.
    eps : float, default 1e-12
        The smallest norm divided by.
    out : ndarray, optional
        Where y goes (x's shape and dtype; x itself for an in-place result). Not with a sparse
        x.
    %(device)s

    Returns
    -------
    y : ndarray or scipy.sparse matrix
        x's shape and (float) dtype; for sparse x, x's class and format.

    %(raises)s

    See Also
    --------
    normalize_forward, Normalizer

    Examples
    --------
    >>> x = np.array([[3.0, 4.0], [1.0, 0.0]])
    >>> nbn.normalize(x)
    array([[0.6, 0.8],
           [1. , 0. ]])
    >>> nbn.normalize(x, p=1, dim=0).round(4)
    array([[0.75, 1.  ],
           [0.25, 0.  ]])
    """
    return _normalize(x, p, dim, eps, out, False, device)[0]


@fill
def normalize_forward(x, p=2.0, dim=1, eps=1e-12, *, out=None, device=None):
    """`normalize` returning what `normalize_backward` needs as well (dense x only).

    Parameters
    ----------
    x, p, dim, eps
        As `normalize` (no sparse x: the sparse backward is not built).
    %(out)s
    %(device)s

    Returns
    -------
    y : ndarray
        As `normalize`.
    saved : ScalingSaved or None
        The norms (saved.stats["norm"]) and what the backward needs (None for a Dask x).

    %(raises)s

    See Also
    --------
    normalize, normalize_backward

    Examples
    --------
    >>> y, saved = nbn.normalize_forward(np.array([[3.0, 4.0]]))
    >>> saved.stats["norm"]
    array([[5.]])
    """
    return _normalize(x, p, dim, eps, out, True, device)


@fill
def normalize_backward(dy, saved):
    """The gradient of a `normalize_forward`, as PyTorch's autograd gives it for
    x/norm.clamp_min(eps).

    Where ``||x|| >= eps``, ``dx = g/N - sum(g*x)/N^2*dN/dx`` with
    ``dN/dx = sgn(x)*|x|^(p-1)/N^(p-1)`` (p = inf: ``sgn(x)/k`` at the k values of largest
    ``|x|``; 0 where x = 0 for p < 1); elsewhere ``dx = g/eps``.

    Parameters
    ----------
    dy : ndarray
        The gradient of y: y's shape.
    saved : ScalingSaved
        The record `normalize_forward` returned.

    Returns
    -------
    dx : ndarray
        x's shape and dtype.

    %(raises_data_backward)s

    See Also
    --------
    normalize_forward

    Examples
    --------
    >>> y, saved = nbn.normalize_forward(np.array([[3.0, 4.0]]))
    >>> nbn.normalize_backward(np.array([[1.0, 0.0]]), saved)
    array([[ 0.128, -0.096]])
    """
    return _backward(dy, saved, "normalize")


def _grad_dy(dy, saved):
    """dy checked against the forward's side and shape: NumPy for a CPU forward (or a
    device='cuda' forward of NumPy x), a GPU array for a GPU forward."""
    where, x = saved._place, saved._x
    V.dy_side(dy, where)
    dy = V.data_array(dy, "dy")
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"dy must have the forward output's shape {x.shape}, got {dy.shape}")
    return dy


def _backward(dy, saved, op):
    """dx of a data function's forward by its backend's data_backward: NumPy expressions on
    the CPU, kernels on the GPU (see the *_backward docstrings for the formulas)."""
    V.saved_record(saved, ScalingSaved, (op,))
    dy = _grad_dy(dy, saved)
    where = saved._place
    dx = where.host.data_backward(op, where.x if where.gpu else saved._x, saved._axes,
                                  where.grad_input(dy), saved._stats, saved._params)
    return dx if not where.gpu else where.deliver(dx, None)
