"""float32 results of numbanorm, scipy and scikit-learn against the float64 truth, on data whose
mean is far from 0 against its spread (the docs' numerics page quotes this script's output).

    python scripts/float32_references.py
"""
import numpy as np
import scipy.stats
import sklearn.preprocessing

import numbanorm as nbn


def data(rng):
    """(100000, 8) float32 columns: means 0 to 1e3, stds 0.17 to 10, 1% NaN."""
    means = np.array([0.0, 1.0, 10.0, 100.0, 545.0, 545.0, 1000.0, 1000.0])
    stds = np.array([1.0, 1.0, 1.0, 1.0, 0.17, 1.0, 10.0, 0.5])
    X = (means + stds * rng.standard_normal((100_000, 8))).astype(np.float32)
    X[rng.random(X.shape) < 0.01] = np.nan
    return X


def err(y, truth):
    return float(np.nanmax(np.abs(y.astype(np.float64) - truth)))


def main():
    X = data(np.random.default_rng(0))
    X64 = X.astype(np.float64)
    truth = scipy.stats.zscore(X64, axis=0, nan_policy="omit")
    print("max |error| against the float64 result of the same float32 input")
    print(f"{'':44s}{'numbanorm':>12s}{'reference':>12s}")
    print(f"{'zscore, nan_policy=omit (scipy.stats)':44s}"
          f"{err(nbn.zscore(X, axis=0, nan_policy='omit'), truth):12.2e}"
          f"{err(scipy.stats.zscore(X, axis=0, nan_policy='omit'), truth):12.2e}")
    truth = sklearn.preprocessing.StandardScaler().fit_transform(X64)
    print(f"{'StandardScaler().fit_transform (sklearn)':44s}"
          f"{err(nbn.StandardScaler().fit_transform(X), truth):12.2e}"
          f"{err(sklearn.preprocessing.StandardScaler().fit_transform(X), truth):12.2e}")
    col = 4  # mean 545, std 0.17, alone (1-d)
    truth = scipy.stats.zscore(X64[:, col], nan_policy="omit")
    print(f"{'the same, column 4 alone (mean 545, std 0.17)':44s}"
          f"{err(nbn.zscore(X[:, col], nan_policy='omit'), truth):12.2e}"
          f"{err(scipy.stats.zscore(X[:, col], nan_policy='omit'), truth):12.2e}")

if __name__ == "__main__":
    main()
