"""scikit-learn's scalers on numbanorm's kernels: StandardScaler, MinMaxScaler, MaxAbsScaler,
Normalizer, and maxabs_scale.

Constructor arguments, fitted attributes and methods are scikit-learn's (1.9), and so are the
numbers (float64 within ~1e-12 relative of the output's scale, float32 within float32
rounding): statistics from one read of each batch by the blocked Welford/Chan kernels, merged
across `partial_fit` calls with Chan's formula (numbanorm.stats.Moments), NaN left out of the
statistics and kept in the output, near-constant features scaled by 1 as scikit-learn decides
them. One difference by design: MinMaxScaler transforms as (X - data_min_)*scale_ + lo, where
scikit-learn computes X*scale_ + min_, which loses the low digits when |X| is large against
the data range (float32 data around 1e6 with a range of 1: errors of 0.06); on other data the
two agree to rounding.

Sparse input (scipy.sparse CSR and CSC, *_matrix and *_array; other formats converted once to
CSR, as scikit-learn's accept_sparse does): Normalizer, StandardScaler(with_mean=False) and
MaxAbsScaler take it, on the compressed-sparse kernels (numbanorm._sparse), with scikit-learn's
numbers and return types: MaxAbsScaler keeps X's format, Normalizer and StandardScaler's
transforms return CSR, as scikit-learn's do. The statistics count the implicit zeros (as
sklearn.utils.sparsefuncs.mean_variance_axis does), come from one read of the stored values
and merge across partial_fit calls with Chan's formula, so float32 streams keep their variance
(scikit-learn's incr_mean_variance_axis missed it by 0.9-1.8e-3 on float32 data of mean 1e6
over 10 batches: scripts/sparse_accuracy.py). Repeated entries count as the one value they sum to (scikit-learn counts each part).

scikit-learn is not a dependency. When it is installed, the scalers are scikit-learn estimators
(they derive from its BaseEstimator, TransformerMixin and OneToOneFeatureMixin, and validate
input with its validate_data, so they work in a Pipeline, with clone, GridSearchCV and
set_output, and pass its check_estimator); without it, they keep the same methods on a small
base of their own. numbanorm imports this module on first use of a scaler, so importing
numbanorm does not import scikit-learn.
"""
import numpy as np

from . import _validate as V
from ._device import is_dask_array, is_device_array, is_sparse
from ._placement import place
from ._dtypes import compute_eps, is_float
from .stats import Moments

try:  # scikit-learn's estimator protocol, where it is installed
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
    _SKLEARN = True
except ImportError:  # pragma: no cover - exercised by a subprocess test
    _SKLEARN = False

__all__ = ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "Normalizer", "maxabs_scale"]


if not _SKLEARN:
    import inspect

    class BaseEstimator:
        """get_params/set_params from the constructor's arguments, as scikit-learn's."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p for p in sig.parameters if p != "self")

        def get_params(self, deep=True):
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(f"Invalid parameter {k!r} for estimator {self!r}. "
                                     f"Valid parameters are: {valid!r}.")
                setattr(self, k, v)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class TransformerMixin:
        def fit_transform(self, X, y=None, **fit_params):
            return self.fit(X, y, **fit_params).transform(X)

    class OneToOneFeatureMixin:
        def get_feature_names_out(self, input_features=None):
            if input_features is not None:
                return np.asarray(input_features, dtype=object)
            return np.asarray([f"x{i}" for i in range(self.n_features_in_)], dtype=object)

    class NotFittedError(ValueError, AttributeError):
        pass

    def check_is_fitted(estimator, attributes=None):
        if not any(k.endswith("_") and not k.startswith("__") for k in vars(estimator)):
            raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet. "
                                 "Call 'fit' with appropriate arguments before using this "
                                 "estimator.")

    def validate_data(estimator, X, reset=True, copy=False, ensure_all_finite=True, **_):
        X = V.data_array(X, "X")
        if not isinstance(X, np.ndarray):
            raise TypeError(f"X must be a NumPy array here, got {type(X).__name__}")
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got {X.ndim}D array instead: reshape your "
                             "data with X.reshape(-1, 1) for a single feature or "
                             "X.reshape(1, -1) for a single sample.")
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"Found array with shape {X.shape} while a minimum of 1 sample "
                             "and 1 feature is required.")
        if ensure_all_finite is True and not np.isfinite(X).all():
            raise ValueError("Input X contains NaN or infinity.")
        if ensure_all_finite == "allow-nan" and np.isinf(X).any():
            raise ValueError("Input X contains infinity.")
        if reset:
            estimator.n_features_in_ = X.shape[1]
        elif X.shape[1] != estimator.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} "
                             f"is expecting {estimator.n_features_in_} features as input.")
        return X.copy() if copy else X

    def _check_sample_weight(sample_weight, X, dtype=None):
        w = np.asarray(sample_weight, dtype=dtype or np.float64)
        if w.ndim == 0:
            w = np.full(X.shape[0], w)
        if w.shape != (X.shape[0],):
            raise ValueError(f"sample_weight.shape == {w.shape}, expected {(X.shape[0],)}!")
        return w


# the dtypes validate_data keeps (scikit-learn's FLOAT_DTYPES); other input becomes float64.
# bfloat16 (ml_dtypes) is kept on the fast path of _plain.
_KEPT = [np.float64, np.float32, np.float16]


def _plain(est, X, reset, allow_nan=True, writeable=False, check_finite=True):
    """X itself when it is plain input that validate_data would accept as it is (a 2-D float
    (float16, bfloat16, float32, float64) NumPy array with samples and features, as many
    features as fitted (when fitted: reset=None takes an unfitted stateless estimator's X),
    no feature names on either side, no infinity, and no NaN unless allow_nan; writeable when
    the caller writes into it); else None, and the caller takes validate_data, which raises
    scikit-learn's errors or converts (bfloat16 to float64). scikit-learn's checks cost ~0.7 ms
    a call (mostly DataFrame detection), more than the kernels on a 10000 x 32 batch: a stream
    of 100 such batches through partial_fit and transform took 2x scikit-learn's own time
    before.
    check_finite=False leaves the infinity check to the caller, whose statistics show it
    (an infinite value makes them non-finite): one pass over X fewer."""
    if type(X) is not np.ndarray or X.ndim != 2 or not is_float(X.dtype) or 0 in X.shape:
        return None
    if hasattr(est, "feature_names_in_") or (writeable and not X.flags.writeable):
        return None
    fitted = getattr(est, "n_features_in_", None)
    if (reset is False and X.shape[1] != fitted) or (reset is None and fitted is not None
                                                     and X.shape[1] != fitted):
        return None
    from .cpu import _host
    if check_finite and _host.count_nonfinite(X, not allow_nan):
        return None
    if reset:
        est.n_features_in_ = X.shape[1]
    return X


def _remote(X):
    """Whether X lives elsewhere than in NumPy: a Dask array or a GPU array."""
    return is_dask_array(X) or is_device_array(X)


def _remote_input(est, X, reset):
    """A Dask or GPU X checked as validate_data would (2-D, real, the fitted feature count),
    without reading it; float32/float64 as they are, integers as float64 (Dask)."""
    X = V.dask_array(X, "X") if is_dask_array(X) else V.data_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
    if reset:
        est.n_features_in_ = X.shape[1]
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    elif X.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is "
                         f"expecting {est.n_features_in_} features as input.")
    return X


def _remote_columns(X, mean, scale, shift):
    """(X - mean)*scale + shift per column of a Dask X, lazily
    (map_blocks; the per-feature statistics chunked like X's columns), or of a GPU X on the
    device (its kind of array back)."""
    if is_device_array(X):
        x, where = place(X, None, "X", data=True)
        view = where.host.data_view(where.x, (0,))
        lay = view.lay

        def slots(v):
            return lay.slots(np.broadcast_to(np.asarray(v, np.float64), lay.keepdims_shape))
        return where.deliver(where.host.data_affine(view, slots(mean), slots(scale),
                                                    slots(shift)), None)
    from .dask import _host as dh
    n = X.shape[1]

    def per_column(v):
        return dh.param_like(np.broadcast_to(np.asarray(v, np.float64), (n,)), X, (1,), (n,))
    return dh.affine(X, (0,), per_column(mean), per_column(scale), per_column(shift),
                     second_read=False)


def _remote_moments(X):
    """The Moments of a Dask or GPU X over its samples (NaN omitted), as NumPy: one read."""
    from .stats import moments
    return moments(X, 0, "omit").compute()


def _columns_transform(X, mean, scale, shift, out):
    """(X - mean)*scale + shift per column of the 2-D X (float64 (n_features,) statistics),
    into out (X itself for an in-place transform) or a fresh array."""
    from .cpu import _host
    view = _host.data_view(X, (0,))
    lay = view.lay
    n = X.shape[1]
    return _host.data_affine(view, lay.slots(np.broadcast_to(mean, n)),
                             lay.slots(np.broadcast_to(scale, n)),
                             lay.slots(np.broadcast_to(shift, n)) if np.ndim(shift) else shift,
                             out)


def _moments_fast(X):
    """count, mean, m2 per feature (NaN omitted) without min/max, as a Moments."""
    from .cpu import _host
    view = _host.data_view(X, (0,))
    lay = view.lay
    count, mean, m2, *_rest = _host.data_moments(view, "omit", False)
    n = X.shape[1]
    inf = np.full(n, np.inf)
    return Moments(lay.stats(count), np.where(lay.stats(count) > 0, lay.stats(mean), np.nan),
                   lay.stats(m2), inf, -inf, 0, "omit")


def _column_range(X):
    """(min, max, NaN count) per feature of the 2-D NumPy X, NaN ignored: the range pass
    alone."""
    from .cpu import _host
    view = _host.data_view(X, (0,))
    lay = view.lay
    _, _, _, lo, hi, nans = _host.data_moments(view, "omit", True, False)
    return lay.stats(lo), lay.stats(hi), lay.stats(nans)


def _range_batch(est, X, reset):
    """(X checked, min, max, NaN count) per feature of a dense (NumPy, Dask or GPU) batch, NaN
    ignored: one read (the fast path of _plain, or scikit-learn's checks where X is not plain
    or holds infinity)."""
    if _remote(X):
        X = _remote_input(est, X, reset)
        m = _remote_moments(X)
        return X, m.min, m.max, X.shape[0] - m.count
    plain = _plain(est, X, reset, check_finite=False)
    if plain is not None:
        lo, hi, nans = _column_range(plain)
        if not (np.isinf(lo).any() or np.isinf(hi).any()):  # (infinity, or an all-NaN
            return plain, lo, hi, nans                        # feature: the checks decide)
    X = validate_data(est, X, reset=reset, dtype=_KEPT, ensure_all_finite="allow-nan")
    return (X,) + _column_range(X)


def _weighted_moments(X, w):
    """Weighted count, mean and M2 per feature of the 2-D X (NaN omitted, with its weight),
    two-pass in float64 (NumPy: sample weights do not go through the kernels)."""
    Xf = X.astype(np.float64)
    ok = ~np.isnan(Xf)
    W = (w[:, None] * ok).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w[:, None] * np.where(ok, Xf, 0.0)).sum(axis=0) / W
        m2 = (w[:, None] * np.where(ok, (Xf - mean) ** 2, 0.0)).sum(axis=0)
    n = X.shape[1]
    return Moments(W, mean, m2, np.full(n, np.inf), np.full(n, -np.inf), 0, "omit")


def _out_for(X, copy):
    """X itself when the transform may write into it (copy=False), else None."""
    return None if copy else X


_CENTER_SPARSE = ("Cannot center sparse matrices: pass `with_mean=False` instead. See "
                  "docstring for motivation and alternatives.")


def _sparse_input(est, X, reset, formats=("csr", "csc")):
    """A scipy.sparse X checked as validate_data(accept_sparse=formats) checks it: a format
    not in formats converted to formats[0], float32/float64 data (others as float64), samples
    and features, the fitted feature count (reset None: checked only where fitted). Infinity
    is left to the caller, whose kernels count it (one pass over the data fewer)."""
    if _SKLEARN and hasattr(est, "feature_names_in_"):  # scikit-learn's warnings
        return validate_data(est, X, reset=bool(reset), accept_sparse=formats, dtype=_KEPT,
                             ensure_all_finite="allow-nan")
    X = V.sparse_matrix(X, "X", formats)
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with shape {X.shape} while a minimum of 1 sample and 1 "
                         "feature is required.")
    fitted = getattr(est, "n_features_in_", None)
    if reset:
        est.n_features_in_ = X.shape[1]
    elif fitted is not None and X.shape[1] != fitted:
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                         f"{fitted} features as input.")
    return X


def _refuse_nonfinite(est, X, allow_nan=True):
    """scikit-learn's error for a sparse X with infinity (or NaN where not allow_nan); returns
    when X has none (the caller's count was a false alarm, e.g. a feature of only NaN)."""
    data = X.data
    bad = np.isinf(data).any() or (not allow_nan and np.isnan(data).any())
    if not bad:
        return
    if _SKLEARN:
        validate_data(est, X, reset=False, accept_sparse=True,
                      ensure_all_finite="allow-nan" if allow_nan else True)
    raise ValueError("Input X contains infinity." if allow_nan else
                     "Input X contains NaN or infinity.")


def _sparse_columns(est, X, converted, factor, copy):
    """Every stored value of the sparse X times factor[its column]: a new matrix (copy), or X's
    own data (copy=False, or X a conversion already); refuses infinity as validate_data
    would."""
    from . import _sparse
    inplace = (not copy or converted) and X.data.flags.writeable
    if inplace and not converted:
        _refuse_nonfinite(est, X)  # before X's data is written
    Y, infs = _sparse.scaled(X, 1, np.asarray(factor, np.float64), inplace=inplace)
    if infs:
        _refuse_nonfinite(est, X)
    return Y


def _reset_attrs(*names):
    """A scaler's _reset: its fitted attributes deleted, for a fit from scratch."""
    def _reset(self):
        for attr in names:
            if hasattr(self, attr):
                delattr(self, attr)
    return _reset


class StandardScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardize features by removing the mean and scaling to unit variance, as
    ``sklearn.preprocessing.StandardScaler``.

    NaN is ignored in fit and kept in transform. The statistics come from one read of each
    batch by the blocked Welford/Chan kernels and merge across `partial_fit` calls with Chan's
    formula (`Moments`), so float32 streams keep their variance.

    Parameters
    ----------
    copy : bool, default True
        False: transform a float X in place.
    with_mean : bool, default True
        Center the data (not with sparse X: it would fill in the zeros).
    with_std : bool, default True
        Scale to unit variance.

    Attributes
    ----------
    mean_, var_ : ndarray of shape (n_features,) or None
        float64 (None where with_mean, with_std is False).
    scale_ : ndarray of shape (n_features,) or None
        ``sqrt(var_)``, with 1 where the variance is within float64 rounding of 0.
    n_samples_seen_ : int or ndarray
        Samples seen (per feature where NaN made the counts differ; float with
        sample_weight).
    n_features_in_ : int
    feature_names_in_ : ndarray
        For DataFrames with string column names (with scikit-learn installed).

    See Also
    --------
    zscore, moments

    Notes
    -----
    NumPy, scipy.sparse (with_mean=False; the implicit zeros count, as scikit-learn counts
    them), Dask and GPU input. With scikit-learn installed the scaler is one of its
    estimators (Pipeline, clone, GridSearchCV, set_output); without it, the same methods. On
    float32 data numbanorm's statistics are the float64 ones rounded once; scikit-learn's
    float32 path can differ from them by ~1e-4 relative on data far from 0.

    Examples
    --------
    >>> X = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, np.nan]])
    >>> scaler = nbn.StandardScaler().fit(X)
    >>> scaler.mean_, scaler.scale_
    (array([ 2., 15.]), array([0.81649658, 5.        ]))
    >>> scaler.transform(X).round(4)
    array([[-1.2247, -1.    ],
           [ 0.    ,  1.    ],
           [ 1.2247,     nan]])
    """

    def __init__(self, *, copy=True, with_mean=True, with_std=True):
        self.copy = copy
        self.with_mean = with_mean
        self.with_std = with_std

    _reset = _reset_attrs("scale_", "n_samples_seen_", "mean_", "var_", "_moments", "_seen")

    def fit(self, X, y=None, sample_weight=None):
        """Compute the mean and std to be used for later scaling."""
        self._reset()
        return self.partial_fit(X, y, sample_weight)

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the statistics with a batch of samples (Chan's merge of its moments)."""
        first = not hasattr(self, "n_samples_seen_")
        if is_sparse(X):
            return self._sparse_partial_fit(X, sample_weight, first)
        remote = _remote(X)
        if remote:
            if sample_weight is not None:
                raise TypeError("sample_weight is not taken with a Dask or GPU X: weight the "
                                "samples in NumPy batches, or fit without weights")
            X = _remote_input(self, X, first)
            plain = X
            batch = _remote_moments(X)
        else:
            plain = _plain(self, X, first, check_finite=False) if sample_weight is None else None
        if plain is not None and not remote:
            batch = _moments_fast(plain)
            if np.isfinite(batch.mean[batch.count > 0]).all() and np.isfinite(batch.m2).all():
                X = plain
            else:  # infinity (or squares beyond float64): scikit-learn's checks decide
                plain = None
        if plain is None:
            X = validate_data(self, X, dtype=_KEPT, reset=first,
                              ensure_all_finite="allow-nan")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype)
            batch = _weighted_moments(X, np.asarray(sample_weight, np.float64))
        elif plain is None:
            batch = _moments_fast(X)
        m = batch if first else self._moments.merge(batch)
        self._moments = m
        # scikit-learn's dtypes: float64 counts where it computes statistics, else int64 (or
        # X's dtype for a weighted batch); one number when every feature saw as many samples
        if self.with_mean or self.with_std:
            counts = m.count
        else:  # scikit-learn counts the samples here, weighted or not
            seen = getattr(self, "_seen", 0) if not first else 0
            self._seen = seen + (batch.count if remote else X.shape[0] - np.isnan(X).sum(axis=0))
            counts = self._seen.astype(np.int64 if sample_weight is None else X.dtype)
        return self._fitted(m, counts)

    def _sparse_partial_fit(self, X, sample_weight, first):
        """partial_fit of a scipy.sparse X: the per-feature moments with the implicit zeros
        (numbanorm._sparse), or weighted (sample_weight, NumPy), merged as the dense ones."""
        if self.with_mean:
            raise ValueError(_CENTER_SPARSE)
        from . import _sparse
        X = _sparse_input(self, X, first)
        n = X.shape[1]
        if sample_weight is not None:
            w = _check_sample_weight(sample_weight, X, dtype=X.dtype).astype(np.float64)
            count, mean, m2 = _sparse.weighted_moments(X, w)
            if not (np.isfinite(mean[count > 0]).all() and np.isfinite(m2[count > 0]).all()):
                _refuse_nonfinite(self, X)
        else:
            std = self.with_std  # (the range only to see infinity where no moments show it)
            count, mean, m2, lo, hi, _ = _sparse.statistics(X, 0, "omit", std, not std)
            seen = count > 0
            if (std and not (np.isfinite(mean[seen]).all() and np.isfinite(m2[seen]).all())) or (
                    not std and (np.isinf(lo[seen]).any() or np.isinf(hi[seen]).any())):
                _refuse_nonfinite(self, X)
        with np.errstate(invalid="ignore"):
            mean = np.where(count > 0, mean, np.nan)
        batch = Moments(count, mean, m2, np.full(n, np.inf), np.full(n, -np.inf), 0, "omit")
        m = batch if first else self._moments.merge(batch)
        self._moments = m
        if self.with_std:  # scikit-learn's mean_variance_axis sums the weights in X's dtype
            counts = m.count.astype(X.dtype)
        else:  # and counts the samples here, weighted or not, NaN left out
            self._seen = (0 if first else getattr(self, "_seen", 0)) + count
            counts = self._seen.astype(np.int64 if sample_weight is None else X.dtype)
        return self._fitted(m, counts)

    def _fitted(self, m, counts):
        """The fitted attributes from the merged moments m and the per-feature sample counts
        (scikit-learn's dtype; one number when every feature saw as many samples)."""
        self.n_samples_seen_ = counts[0] if counts.max() == counts.min() else counts
        if not self.with_mean and not self.with_std:
            self.mean_ = None
            self.var_ = None
            self.scale_ = None
            return self
        mean = m.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(m.count > 0, m.m2 / np.where(m.count > 0, m.count, 1.0), np.nan)
        self.mean_ = mean
        if self.with_std:
            self.var_ = var
            n = m.count
            eps = np.finfo(np.float64).eps
            constant = var <= n * eps * var + (n * mean * eps) ** 2
            self.scale_ = np.where(constant, 1.0, np.sqrt(var))
        else:
            self.var_ = None
            self.scale_ = None
        return self

    def transform(self, X, copy=None):
        """Center and scale by the fitted mean and scale (NaN stays NaN)."""
        check_is_fitted(self)
        if is_sparse(X):
            return self._sparse_transform(X, copy, inverse=False)
        X, out = self._input(X, copy)
        mean = self.mean_ if self.with_mean else 0.0
        scale = 1.0 / self.scale_ if self.with_std else 1.0
        if _remote(X):
            return _remote_columns(X, mean, scale, 0.0)
        return _columns_transform(X, mean, scale, 0.0, out)

    def _input(self, X, copy):
        """(X, out) for a transform: X validated, out X itself (copy=False) or None (a fresh
        array, written by the kernel: no copy of X first). A Dask X comes back checked, with
        out None."""
        if _remote(X):
            return _remote_input(self, X, False), None
        copy = copy if copy is not None else self.copy
        plain = _plain(self, X, False, writeable=not copy)
        if plain is None:
            X = validate_data(self, X, reset=False, copy=False, dtype=_KEPT,
                              force_writeable=not copy, ensure_all_finite="allow-nan")
        return X, (None if copy else X)

    def _sparse_transform(self, X, copy, inverse):
        """(inverse_)transform of a scipy.sparse X: each column times 1/scale_ (scale_),
        returned as CSR, as scikit-learn's."""
        if self.with_mean:
            raise ValueError(_CENTER_SPARSE)
        copy = copy if copy is not None else self.copy
        Y = _sparse_input(self, X, False, ("csr",))
        if self.scale_ is None:  # (with_std=False: nothing to scale; infinity still refused)
            _refuse_nonfinite(self, Y)
            return Y.copy() if copy and Y is X else Y
        factor = self.scale_ if inverse else 1.0 / self.scale_
        return _sparse_columns(self, Y, Y is not X, factor, copy)

    def inverse_transform(self, X, copy=None):
        """Scale back to the original representation."""
        check_is_fitted(self)
        if is_sparse(X):
            return self._sparse_transform(X, copy, inverse=True)
        X, out = self._input(X, copy)
        scale = self.scale_ if self.with_std else 1.0
        mean = self.mean_ if self.with_mean else 0.0
        if _remote(X):
            return _remote_columns(X, 0.0, scale, mean)
        return _columns_transform(X, 0.0, scale, mean, out)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = not self.with_mean
        tags.transformer_tags.preserves_dtype = ["float64", "float32", "float16"]
        return tags


class MinMaxScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Transform features by scaling each feature to feature_range, as
    ``sklearn.preprocessing.MinMaxScaler``.

    NaN is ignored in fit and kept in transform; constant features map to feature_range[0].
    By design the transform is ``(X - data_min_)*scale_ + lo``, where scikit-learn computes
    ``X*scale_ + min_``, which loses the low digits when ``|X|`` is large against the data range
    (float32 data around 1e6 with a range of 1: errors of 0.06); elsewhere the two agree to
    rounding.

    Parameters
    ----------
    feature_range : tuple (lo, hi), default (0, 1)
    copy : bool, default True
        False: transform a float X in place.
    clip : bool, default False
        Clip transformed values to feature_range.

    Attributes
    ----------
    data_min_, data_max_, data_range_ : ndarray of shape (n_features,)
        In X's dtype.
    scale_, min_ : ndarray of shape (n_features,)
        As scikit-learn's.
    n_samples_seen_ : int
    n_features_in_ : int

    See Also
    --------
    minmax_scale

    Examples
    --------
    >>> X = np.array([[1.0, 10.0], [2.0, 20.0], [5.0, 20.0]])
    >>> nbn.MinMaxScaler().fit_transform(X)
    array([[0.  , 0.  ],
           [0.25, 1.  ],
           [1.  , 1.  ]])
    """

    def __init__(self, feature_range=(0, 1), *, copy=True, clip=False):
        self.feature_range = feature_range
        self.copy = copy
        self.clip = clip

    _reset = _reset_attrs("scale_", "min_", "n_samples_seen_", "data_min_", "data_max_",
                          "data_range_")

    def fit(self, X, y=None):
        """Compute the minimum and maximum to be used for later scaling."""
        self._reset()
        return self.partial_fit(X, y)

    def partial_fit(self, X, y=None):
        """Update the minimum and maximum with a batch of samples."""
        lo, hi = V.feature_range(self.feature_range)
        first = not hasattr(self, "n_samples_seen_")
        X, lo_, hi_, nans = _range_batch(self, X, first)
        dt = X.dtype
        empty = nans == X.shape[0]  # no value but NaN: NaN, as np.nanmin gives
        data_min = np.where(empty, np.nan, lo_).astype(dt)
        data_max = np.where(empty, np.nan, hi_).astype(dt)
        if first:
            self.n_samples_seen_ = X.shape[0]
        else:
            data_min = np.minimum(self.data_min_, data_min)
            data_max = np.maximum(self.data_max_, data_max)
            self.n_samples_seen_ += X.shape[0]
        data_range = data_max - data_min
        with np.errstate(invalid="ignore"):
            zero = data_range < 10 * compute_eps(dt)
        self.scale_ = (dt.type(hi) - dt.type(lo)) / np.where(zero, dt.type(1), data_range)
        self.min_ = dt.type(lo) - data_min * self.scale_
        self.data_min_ = data_min
        self.data_max_ = data_max
        self.data_range_ = data_range
        return self

    def transform(self, X):
        """Scale to feature_range: ``(X - data_min_)*scale_ + feature_range[0]``."""
        check_is_fitted(self)
        X, out = StandardScaler._input(self, X, None)
        lo, hi = V.feature_range(self.feature_range)
        if _remote(X):
            if self.clip and is_device_array(X):
                raise ValueError("clip=True is not taken with a GPU X: clip the result with "
                                 "your GPU library (cupy.clip, torch.clamp)")
            y = _remote_columns(X, self.data_min_, self.scale_, lo)
            return y.clip(lo, hi) if self.clip else y
        y = _columns_transform(X, self.data_min_.astype(np.float64),
                               self.scale_.astype(np.float64), lo, out)
        if self.clip:
            np.clip(y, lo, hi, out=y)
        return y

    def inverse_transform(self, X):
        """Undo the scaling: ``(X - feature_range[0])/scale_ + data_min_``."""
        check_is_fitted(self)
        X, out = StandardScaler._input(self, X, None)
        lo, _ = V.feature_range(self.feature_range)
        if _remote(X):
            return _remote_columns(X, np.full(X.shape[1], lo), 1.0 / self.scale_.astype(
                np.float64), self.data_min_)
        return _columns_transform(X, np.full(X.shape[1], lo),
                                  1.0 / self.scale_.astype(np.float64),
                                  self.data_min_.astype(np.float64), out)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32", "float16"]
        return tags


class MaxAbsScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Scale each feature by its maximum absolute value, as
    ``sklearn.preprocessing.MaxAbsScaler``.

    ``X/max|X|`` per feature, so that values land in [-1, 1] without a shift: zeros stay zero,
    and sparse CSR and CSC input stays sparse, in its format and class. NaN is ignored in fit
    and kept in transform; features whose ``max|x|`` is below 10 eps of the dtype get scale 1.
    NumPy, scipy.sparse, Dask and GPU input.

    Parameters
    ----------
    copy : bool, default True
        False: transform a float X (or a sparse X's data) in place.
    clip : bool, default False
        Clip transformed values to [-1, 1] (not with GPU X).

    Attributes
    ----------
    max_abs_ : ndarray of shape (n_features,)
        Per-feature maximum absolute value, in X's dtype (NaN for a feature of only NaN).
    scale_ : ndarray of shape (n_features,)
        ``max_abs_``, with 1 where it is below 10 eps.
    n_samples_seen_ : int
        Samples seen over every fit and partial_fit call since the last fit.
    n_features_in_ : int

    See Also
    --------
    maxabs_scale

    Examples
    --------
    >>> X = np.array([[1.0, -10.0], [-4.0, 5.0]])
    >>> nbn.MaxAbsScaler().fit_transform(X)
    array([[ 0.25, -1.  ],
           [-1.  ,  0.5 ]])
    """

    def __init__(self, *, copy=True, clip=False):
        self.copy = copy
        self.clip = clip

    _reset = _reset_attrs("scale_", "n_samples_seen_", "max_abs_")

    def fit(self, X, y=None):
        """Compute the maximum absolute value to be used for later scaling."""
        self._reset()
        return self.partial_fit(X, y)

    def partial_fit(self, X, y=None):
        """Update the maximum absolute values with a batch of samples (one read of it)."""
        first = not hasattr(self, "n_samples_seen_")
        if is_sparse(X):
            from . import _sparse
            X = _sparse_input(self, X, first)
            count, _, _, lo, hi, nans = _sparse.statistics(X, 0, "omit", False, True)
            if np.isinf(lo[count > 0]).any() or np.isinf(hi[count > 0]).any():
                _refuse_nonfinite(self, X)
        else:
            X, lo, hi, nans = _range_batch(self, X, first)
        dt = np.dtype(X.dtype)
        empty = nans == X.shape[0]  # no value but NaN: NaN, as np.nanmax gives
        max_abs = np.where(empty, np.nan, np.maximum(np.abs(lo), np.abs(hi))).astype(dt)
        if first:
            self.n_samples_seen_ = X.shape[0]
        else:
            max_abs = np.maximum(self.max_abs_, max_abs)
            self.n_samples_seen_ += X.shape[0]
        self.max_abs_ = max_abs
        with np.errstate(invalid="ignore"):
            zero = max_abs < 10 * compute_eps(dt)
        self.scale_ = np.where(zero, dt.type(1), max_abs).astype(dt)
        return self

    def transform(self, X):
        """Scale each feature by ``1/scale_`` (clipped to [-1, 1] with clip=True)."""
        check_is_fitted(self)
        inv = 1.0 / self.scale_.astype(np.float64)
        if is_sparse(X):
            Y = self._sparse_scaled(X, inv)
            if self.clip:
                np.clip(Y.data, -1.0, 1.0, out=Y.data)
            return Y
        X, out = StandardScaler._input(self, X, None)
        if _remote(X):
            if self.clip and is_device_array(X):
                raise ValueError("clip=True is not taken with a GPU X: clip the result with "
                                 "your GPU library (cupy.clip, torch.clamp)")
            y = _remote_columns(X, 0.0, inv, 0.0)
            return y.clip(-1.0, 1.0) if self.clip else y
        y = _columns_transform(X, 0.0, inv, 0.0, out)
        if self.clip:
            np.clip(y, -1.0, 1.0, out=y)
        return y

    def inverse_transform(self, X):
        """Scale back: ``X*scale_`` per feature."""
        check_is_fitted(self)
        scale = self.scale_.astype(np.float64)
        if is_sparse(X):
            return self._sparse_scaled(X, scale)
        X, out = StandardScaler._input(self, X, None)
        if _remote(X):
            return _remote_columns(X, 0.0, scale, 0.0)
        return _columns_transform(X, 0.0, scale, 0.0, out)

    def _sparse_scaled(self, X, factor):
        """A scipy.sparse X (CSR or CSC, kept) with each column times factor."""
        Y = _sparse_input(self, X, False)
        return _sparse_columns(self, Y, Y is not X, factor, self.copy)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32", "float16"]
        return tags


def maxabs_scale(X, *, axis=0, copy=True):
    """Scale each feature (axis=0) or sample (axis=1) to [-1, 1] by its maximum absolute value,
    as ``sklearn.preprocessing.maxabs_scale``: a `MaxAbsScaler` fitted and applied to X (or
    X.T).

    Parameters
    ----------
    X : array_like of shape (n_samples,) or (n_samples, n_features), or scipy.sparse matrix
        NumPy (integers and booleans as float64), CSR or CSC (kept sparse, in its format and
        class; other sparse formats converted to CSR), Dask or GPU arrays.
    axis : {0, 1}, default 0
        0: each feature (column) scaled; 1: each sample (row).
    copy : bool, default True
        False: scale X in place where it is a float array (a sparse X's data).

    Returns
    -------
    ndarray or sparse matrix
        X's shape; sparse input stays sparse with its sparsity pattern.

    Raises
    ------
    ValueError
        axis not 0 or 1; X not 1-d or 2-d; infinity in X.
    TypeError
        Complex or non-numeric X.

    See Also
    --------
    MaxAbsScaler

    Examples
    --------
    >>> nbn.maxabs_scale(np.array([[1.0, -10.0], [-4.0, 5.0]]), axis=1)
    array([[ 0.1, -1. ],
           [-0.8,  1. ]])
    """
    if isinstance(axis, (bool, np.bool_)) or axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")
    one_d = False
    if is_sparse(X):
        X = V.sparse_matrix(X, "X")
    elif not _remote(X):
        X = V.data_array(X, "X")
        if X.ndim not in (1, 2):
            raise ValueError(f"X must be 1-d or 2-d, got {X.ndim}-d")
        one_d = X.ndim == 1
        if one_d:
            X = X.reshape(-1, 1)
    s = MaxAbsScaler(copy=copy)
    Y = s.fit_transform(X) if axis == 0 else s.fit_transform(X.T).T
    return Y.ravel() if one_d else Y


_NORMS = {"l1": 1.0, "l2": 2.0, "max": np.inf}


class Normalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Normalize samples (rows) individually to unit norm, as ``sklearn.preprocessing.Normalizer``.

    Rows whose norm is below 10 eps of the dtype are left as they are. Stateless: fit only
    checks X. Sparse CSR and CSC input gives a CSR result, as scikit-learn's.

    Parameters
    ----------
    norm : {'l1', 'l2', 'max'}, default 'l2'
        'max': ``max|x|``.
    copy : bool, default True
        False: normalize a float X in place.

    Attributes
    ----------
    n_features_in_ : int

    See Also
    --------
    normalize

    Examples
    --------
    >>> X = np.array([[3.0, 4.0], [1.0, 0.0]])
    >>> nbn.Normalizer().fit_transform(X)
    array([[0.6, 0.8],
           [1. , 0. ]])
    """

    def __init__(self, norm="l2", *, copy=True):
        self.norm = norm
        self.copy = copy

    def fit(self, X, y=None):
        """Check X (the normalizer has no statistics to learn)."""
        if is_sparse(X):
            _refuse_nonfinite(self, _sparse_input(self, X, True), allow_nan=False)
        elif _remote(X):
            _remote_input(self, X, True)
        elif _plain(self, X, True, allow_nan=False) is None:  # (bfloat16: see transform)
            validate_data(self, X)
        return self

    def transform(self, X, copy=None):
        """Scale each row of X to unit norm."""
        if self.norm not in _NORMS:
            raise ValueError(f"'{self.norm}' is not a supported norm: pick 'l1', 'l2' or 'max'")
        check_is_fitted(self)
        if _remote(X):
            return self._remote_transform(X)
        copy = copy if copy is not None else self.copy
        if is_sparse(X):
            return self._sparse_transform(X, copy)
        plain = _plain(self, X, None, allow_nan=False, writeable=not copy)
        if plain is not None:  # (bfloat16 too, which validate_data would make float64)
            X = plain.copy() if copy else plain
        else:
            X = validate_data(self, X, copy=copy, reset=False, dtype=_KEPT,
                              force_writeable=True)
        from .cpu import _host
        view = _host.data_view(X, (1,))
        norms = _host.data_norms(view, _NORMS[self.norm])
        with np.errstate(divide="ignore"):
            scale = np.where(norms < 10 * compute_eps(X.dtype), 1.0, 1.0 / norms)
        return _host.data_affine(view, np.zeros_like(scale), scale, 0.0, X)

    def _sparse_transform(self, X, copy):
        """Each row of a scipy.sparse X over its norm, as CSR (scikit-learn's): rows of norm 0
        are left as they are (scikit-learn's sparse rule; its dense rule, below 10 eps, is
        the dense path's)."""
        from . import _sparse
        Y = _sparse_input(self, X, None, ("csr",))
        inplace = (not copy or Y is not X) and Y.data.flags.writeable
        if inplace:
            _refuse_nonfinite(self, Y, allow_nan=False)  # before Y's data is written
        out, norms = _sparse.normalized(Y, 1, _NORMS[self.norm], 0.0, keep_zero=True,
                                        inplace=inplace, name="X")
        if not np.isfinite(norms).all():
            _refuse_nonfinite(self, Y, allow_nan=False)
        return out

    def _remote_transform(self, X):
        """Each row of a Dask X (lazily) or a GPU X (on the device) over its norm: the norms by
        a reduction over the features, then the elementwise pass (rows of norm below 10 eps
        kept as they are)."""
        if hasattr(self, "n_features_in_"):
            X = _remote_input(self, X, False)
        x, where = place(X, None, "X", data=True)
        view = where.host.data_view(where.x if where.gpu else x, (1,))
        norm = where.host.data_norms(view, _NORMS[self.norm])
        with np.errstate(divide="ignore"):
            scale = np.where(norm < 10 * compute_eps(x.dtype), 1.0, 1.0 / norm)
        return where.deliver(where.host.data_affine(view, np.zeros_like(norm), scale, 0.0),
                             None)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32", "float16"]
        return tags


if not _SKLEARN:  # no tags without scikit-learn
    for _cls in (StandardScaler, MinMaxScaler, MaxAbsScaler, Normalizer):
        del _cls.__sklearn_tags__
