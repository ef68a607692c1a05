"""Mergeable statistics: `moments(a, axis, nan_policy)` and the `Moments` record.

A `Moments` holds, per output position (x's shape without the reduced axes), float64 arrays

    count  values that entered (every value; with nan_policy='omit' the non-NaN ones)
    mean   their mean
    m2     the sum of their squared deviations from the mean (the variance is m2/(count - ddof))
    min, max   NaN ignored with 'omit'; NaN where a NaN entered with 'propagate'

computed by the blocked Welford/Chan kernels of numbanorm.cpu, and merges exactly with Chan's
formula:

    n = na + nb;  delta = mean_b - mean_a;  mean = mean_a + delta*nb/n;
    m2 = m2_a + m2_b + delta^2*na*nb/n;  min = min(min_a, min_b);  max = max(max_a, max_b)

so statistics of chunks, threads, processes and Dask tasks combine into the statistics of the
whole: `m1.merge(m2)` (or `m1 + m2`), `m.update(chunk)` for a stream. Counts are float64, so
that sample weights and merges stay exact (integers up to 2^53). A `Moments` pickles, and
`to_arrays()` / `Moments.from_arrays(...)` and `stack()` / `Moments.unstack(...)` convert it to
and from plain arrays for whatever carries it. The scalers (numbanorm.preprocessing), zscore
and the Dask backend (numbanorm.dask._host) all stand on it.
"""
import numpy as np

from . import _validate as V
from ._docs import fill
from ._device import is_dask_array, is_sparse, requested
from ._chan import merge_arrays
from ._placement import place

__all__ = ["Moments", "moments"]

_FIELDS = ("count", "mean", "m2", "min", "max")


class Moments:
    """Mergeable statistics: count, mean, M2, min and max per output position.

    Computed by `moments` (one read of the data by the blocked Welford/Chan kernels), and
    merged exactly with Chan's formula: ``n = na + nb``, ``delta = mean_b - mean_a``,
    ``mean = mean_a + delta*nb/n``, ``m2 = m2_a + m2_b + delta^2*na*nb/n``. So the statistics of
    chunks, threads, processes and Dask tasks combine into those of the whole: ``m1 + m2``,
    ``m.update(chunk)`` for a stream. A Moments pickles, and converts to and from plain arrays
    (`to_arrays`/`from_arrays`, `stack`/`unstack`) for whatever carries it.

    Parameters
    ----------
    count, mean, m2, min, max : array_like
        One shape, converted to float64 (counts are float64 so that weights and merges stay
        exact up to 2^53 values).
    axis : int, tuple of int or None, default 0
        The axes the statistics were taken over: `update` reduces new chunks over them.
    nan_policy : {'propagate', 'omit', 'raise'}, default 'propagate'
        How they were taken: `update` takes new chunks the same way.

    Attributes
    ----------
    count : ndarray
        The values that entered per position (with nan_policy='omit', the non-NaN ones).
    mean : ndarray
        Their mean (NaN for no values; +inf or -inf where an infinity entered, as NumPy).
    m2 : ndarray
        The sum of their squared deviations from the mean: the variance is m2/(count - ddof).
    min, max : ndarray
        NaN ignored with 'omit'; NaN where a NaN entered with 'propagate'.
    axis, nan_policy
        As given.
    shape : tuple
        The positions' shape.
    lazy : bool
        Whether the fields are Dask arrays not yet computed (`compute` computes them).

    Raises
    ------
    ValueError
        Fields of different shapes, or an unknown nan_policy.

    See Also
    --------
    moments, StandardScaler

    Examples
    --------
    >>> a = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 60.0]])
    >>> m = nbn.moments(a[:2]) + nbn.moments(a[2:])
    >>> m.mean, m.var(ddof=1)
    (array([ 2., 30.]), array([  1., 700.]))
    >>> stream = nbn.Moments.empty((2,), axis=0)
    >>> for chunk in (a[:1], a[1:]):
    ...     _ = stream.update(chunk)
    >>> stream.count, stream.min, stream.max
    (array([3., 3.]), array([ 1., 10.]), array([ 3., 60.]))
    """

    __slots__ = _FIELDS + ("axis", "nan_policy")

    def __init__(self, count, mean, m2, min, max, axis=0, nan_policy="propagate"):
        arrays = [np.array(v, dtype=np.float64) for v in (count, mean, m2, min, max)]
        shape = arrays[0].shape
        for name, a in zip(_FIELDS, arrays):
            if a.shape != shape:
                raise ValueError(f"Moments fields must share one shape: count has {shape}, "
                                 f"{name} has {a.shape}")
        self.count, self.mean, self.m2, self.min, self.max = arrays
        self.axis = axis
        self.nan_policy = V.nan_policy(nan_policy)

    # -- construction and conversion -------------------------------------------------------

    @classmethod
    def _lazy(cls, count, mean, m2, min, max, axis=0, nan_policy="propagate"):
        """A Moments whose fields are lazy (Dask) arrays, taken as they are."""
        self = cls.__new__(cls)
        self.count, self.mean, self.m2, self.min, self.max = count, mean, m2, min, max
        self.axis = axis
        self.nan_policy = V.nan_policy(nan_policy)
        return self

    @property
    def lazy(self):
        """Whether the fields are Dask arrays, not yet computed."""
        return is_dask_array(self.count)

    def compute(self, **kwargs):
        """The statistics as NumPy arrays.

        For lazy (Dask) fields, one computation of all five (the data read once); self where
        they are NumPy already.

        Parameters
        ----------
        **kwargs
            Passed to ``dask.compute``.

        Returns
        -------
        Moments
            With NumPy fields.
        """
        if not self.lazy:
            return self
        import dask
        values = dask.compute(*(getattr(self, f) for f in _FIELDS), **kwargs)
        return Moments(*values, axis=self.axis, nan_policy=self.nan_policy)

    @classmethod
    def empty(cls, shape=(), axis=0, nan_policy="propagate"):
        """The statistics of no values: count 0, mean NaN, m2 0, min +inf, max -inf.

        The identity of `merge`: the start of a stream.

        Parameters
        ----------
        shape : tuple of int, default ()
            The positions' shape.
        axis, nan_policy
            As the constructor's.

        Returns
        -------
        Moments

        Examples
        --------
        >>> m = nbn.Moments.empty((2,))
        >>> (m + nbn.moments(np.array([[1.0, 2.0]]))).mean
        array([1., 2.])
        """
        z = np.zeros(shape)
        return cls(z, np.full(shape, np.nan), z, np.full(shape, np.inf), np.full(shape, -np.inf),
                   axis, nan_policy)

    @classmethod
    def from_arrays(cls, count, mean, m2, min, max, axis=0, nan_policy="propagate"):
        """A Moments from its five fields (the inverse of `to_arrays`).

        Parameters
        ----------
        count, mean, m2, min, max, axis, nan_policy
            As the constructor's.

        Returns
        -------
        Moments
        """
        return cls(count, mean, m2, min, max, axis, nan_policy)

    def to_arrays(self):
        """The five fields as copies.

        Returns
        -------
        tuple of ndarray
            (count, mean, m2, min, max).
        """
        return tuple(getattr(self, f).copy() for f in _FIELDS)

    def stack(self):
        """The five fields as one float64 array.

        Returns
        -------
        ndarray
            Shape (5,) + self.shape, in the order count, mean, m2, min, max.
        """
        return np.stack([getattr(self, f) for f in _FIELDS])

    @classmethod
    def unstack(cls, a, axis=0, nan_policy="propagate"):
        """The inverse of `stack`.

        Parameters
        ----------
        a : array_like of shape (5, ...)
        axis, nan_policy
            As the constructor's.

        Returns
        -------
        Moments

        Raises
        ------
        ValueError
            a's first dimension is not 5.
        """
        a = np.asarray(a, dtype=np.float64)
        if a.ndim < 1 or a.shape[0] != 5:
            raise ValueError(f"a stacked Moments has shape (5, ...), got {a.shape}")
        return cls(*a, axis=axis, nan_policy=nan_policy)

    def __getstate__(self):
        return {f: getattr(self, f) for f in self.__slots__}

    def __setstate__(self, state):
        for f in self.__slots__:
            setattr(self, f, state[f])

    @property
    def shape(self):
        return self.count.shape

    def __repr__(self):
        return (f"Moments(shape={self.shape}, count={self.count!r}, mean={self.mean!r}, "
                f"m2={self.m2!r}, min={self.min!r}, max={self.max!r})")

    # -- statistics ------------------------------------------------------------------------

    def var(self, ddof=0):
        """The variance m2/(count - ddof); NaN where count - ddof <= 0.

        Parameters
        ----------
        ddof : int, default 0
            Delta degrees of freedom.

        Returns
        -------
        ndarray
            float64, self.shape.
        """
        ddof = V.ddof(ddof)
        dof = self.count - ddof
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(dof > 0, self.m2 / np.where(dof > 0, dof, 1.0), np.nan)

    def std(self, ddof=0):
        """The standard deviation sqrt(var(ddof)).

        Parameters
        ----------
        ddof : int, default 0
            Delta degrees of freedom.

        Returns
        -------
        ndarray
            float64, self.shape.
        """
        return np.sqrt(self.var(ddof))

    # -- merging ---------------------------------------------------------------------------

    def merge(self, other):
        """The statistics of both sets of values, as a new Moments (Chan's formula; also ``+``).

        Parameters
        ----------
        other : Moments
            Of the same shape.

        Returns
        -------
        Moments
            Lazy where either is lazy.

        Raises
        ------
        TypeError
            other is not a Moments.
        ValueError
            The shapes differ.
        """
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge a Moments, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"Moments of shape {self.shape} and {other.shape} cannot merge")
        count, mean, m2 = merge_arrays(self.count, self.mean, self.m2, other.count,
                                       other.mean, other.m2)
        lo, hi = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        mean, m2 = _infinite(mean, m2, lo, hi)
        make = Moments._lazy if self.lazy or other.lazy else Moments
        return make(count, mean, m2, lo, hi, self.axis, self.nan_policy)

    __add__ = merge

    def update(self, chunk):
        """Merge the statistics of a new chunk into this record, in place.

        The chunk is reduced over self.axis with self.nan_policy, as `moments` would.

        Parameters
        ----------
        chunk : array_like
            NumPy, GPU, Dask or scipy.sparse data whose reduction has self.shape.

        Returns
        -------
        Moments
            self.

        Raises
        ------
        ValueError
            The chunk's statistics have another shape.
        """
        m = moments(chunk, self.axis, self.nan_policy)
        if m.shape != self.shape:
            raise ValueError(f"a chunk of shape {np.shape(chunk)} reduced over axis "
                             f"{self.axis} gives statistics of shape {m.shape}, not "
                             f"{self.shape}")
        merged = self.merge(m)
        for f in _FIELDS:
            setattr(self, f, getattr(merged, f))
        return self


def place_data(a, axis, device, name="a", axis_name="axis"):
    """The data functions' first step: (x checked and placed, placement, axes)."""
    x, where = place(a, device, name, data=True)
    return x, where, V.axes(axis, x.ndim, axis_name)


def read(x, where, axes):
    """The backend's DataView of x for a reduction over axes."""
    return where.host.data_view(where.x if where.gpu else x, axes)


@fill
def moments(a, axis=0, nan_policy="propagate", *, device=None):
    """The `Moments` of a over `axis`, from one read of the data.

    Count, mean, M2, min and max per output position, by the blocked Welford/Chan kernels
    (no E[x^2] - mean^2 anywhere).

    Parameters
    ----------
    a : array_like
        NumPy (CPU), a GPU array (the statistics come back as NumPy arrays), a Dask array (a
        lazy reduction: the fields are lazy Dask arrays, `Moments.compute`), or a scipy.sparse
        matrix or array (CSR, CSC, other formats converted to CSR once; 2-d), whose implicit
        zeros count as values, as scikit-learn's mean_variance_axis counts them.
    axis : int, tuple of int or None, default 0
        The axes reduced; None: all.
    nan_policy : {'propagate', 'omit', 'raise'}, default 'propagate'
        'propagate': a NaN makes its position's mean, M2, min and max NaN. 'omit': NaN left
        out, counted per position. 'raise': a ValueError if a holds NaN.
    %(device)s

    Returns
    -------
    Moments
        float64 fields of a's shape without the reduced axes.

    %(raises)s

    See Also
    --------
    Moments, zscore

    Examples
    --------
    >>> a = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 60.0]])
    >>> m = nbn.moments(a, axis=0, nan_policy="omit")
    >>> m.count, m.mean, m.min, m.max
    (array([3., 2.]), array([ 2., 35.]), array([ 1., 10.]), array([ 3., 60.]))
    >>> m.var(ddof=1)
    array([1.00e+00, 1.25e+03])
    """
    if is_sparse(a):
        return _sparse_moments(a, axis, nan_policy, device)
    x, where, axes = place_data(a, axis, device)
    nan_policy = V.nan_policy(nan_policy)
    view = read(x, where, axes)
    count, mean, m2, lo, hi, nans = where.host.data_moments(view, nan_policy, True)
    mean = np.where(count == 0, np.nan, mean)  # np.nanmean's value for no values
    mean, m2 = _infinite(mean, m2, lo, hi)
    make = Moments._lazy if where.lazy else Moments
    return make(view.stats(count), view.stats(mean), view.stats(m2), view.stats(lo),
                view.stats(hi), axis, nan_policy)


def _sparse_moments(a, axis, nan_policy, device):
    """moments of a scipy.sparse a (numbanorm._sparse)."""
    if requested(device) == "cuda":
        raise ValueError("a is a scipy.sparse matrix, which runs on the CPU, but device='cuda' "
                         "was asked for")
    m = V.sparse_matrix(a, "a")
    axes = V.axes(axis, 2)
    nan_policy = V.nan_policy(nan_policy)
    from . import _sparse
    count, mean, m2, lo, hi, _ = _sparse.statistics(m, axes[0] if len(axes) == 1 else None,
                                                    nan_policy, name="a")
    if len(axes) == 2:
        count, mean, m2, lo, hi = (v.reshape(()) for v in (count, mean, m2, lo, hi))
    mean = np.where(count == 0, np.nan, mean)
    mean, m2 = _infinite(mean, m2, lo, hi)
    return Moments(count, mean, m2, lo, hi, axis, nan_policy)


def _infinite(mean, m2, lo, hi):
    """(mean, m2) with NumPy's values where a position holds an infinity (its min or max is
    one): mean +inf or -inf, or NaN with both signs; m2 NaN (np.var's). The running means of
    the kernels and Chan's merge give NaN there (inf - inf in their deltas)."""
    pos, neg = hi == np.inf, lo == -np.inf
    mean = np.where(pos & ~neg, np.inf, np.where(neg & ~pos, -np.inf,
                                                  np.where(pos & neg, np.nan, mean)))
    return mean, np.where(pos | neg, np.nan, m2)
