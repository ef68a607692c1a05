"""The variance of float32 sparse features far from zero (stored values of mean 1e6 and
std 1; --zeros: the fraction left as implicit zeros, default none), through
StandardScaler(with_mean=False): numbanorm's and scikit-learn's fit, and their partial_fit
over 10 and 100 row chunks, against the float64 variance of the same float32 values. Prints
the largest relative error over the features.

    python scripts/sparse_accuracy.py [--rows 20000] [--features 8] [--zeros 0] [--seed 0]
"""
import argparse

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import StandardScaler as SkStandardScaler

import numbanorm as nbn


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--zeros", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n, d = args.rows, args.features
    dense = (1e6 + rng.standard_normal((n, d))).astype(np.float32)
    dense[rng.random((n, d)) < args.zeros] = 0
    X = sp.csr_array(dense)
    exact = dense.astype(np.float64).var(axis=0)
    print(f"float32 CSR {n} x {d}, values of mean 1e6 and std 1, {args.zeros:g} of them implicit "
          "zeros: largest relative error of var_")
    for name, cls in (("numbanorm", nbn.StandardScaler), ("scikit-learn", SkStandardScaler)):
        fit = cls(with_mean=False).fit(X)
        print(f"  {name:<13} fit            {np.max(np.abs(fit.var_ - exact) / exact):.1e}")
        for chunks in (10, 100):
            s = cls(with_mean=False)
            for part in np.array_split(np.arange(n), chunks):
                s.partial_fit(X[part[0]:part[-1] + 1])
            err = np.max(np.abs(s.var_ - exact) / exact)
            print(f"  {name:<13} partial_fit x{chunks:<4}{err:.1e}")


if __name__ == "__main__":
    main()
