"""local_response_norm's window sums on data with a large dynamic range along the channels:
numbanorm's block prefix/suffix sums (cpu/window.py) against a running sum that adds the
entering square and subtracts the leaving one, a cumulative-sum difference (what a NumPy
version does), and PyTorch 2.13 (avg_pool3d over the padded squares), all in the data's
dtype; the reference is float64 with every window summed exactly (math.fsum).

Data: channels of values ~U(0.5, 1.5), every 16th channel `big` (1e6 in float32, 1e12 in
float64); size 5, alpha 1, beta 1, k 0, so y = x*size/(window sum) exposes the sums' error.
Prints the largest and the median relative error of y per method.

    python scripts/lrn_accuracy.py
"""
import math

import numpy as np

import numbanorm as nbn


def exact(x, size):
    N, C, S = x.shape
    xs = x.astype(np.float64)
    d = np.empty_like(xs)
    for n in range(N):
        for c in range(C):
            lo, hi = max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)
            for s in range(S):
                d[n, c, s] = math.fsum(xs[n, lo:hi, s] ** 2)
    return xs / (d / size)


def running(x, size):
    """The add-entering, subtract-leaving window sum, in x's dtype."""
    N, C, S = x.shape
    sq = x * x
    d = np.empty_like(x)
    acc = np.zeros((N, S), x.dtype)
    for c in range(min(C, (size - 1) // 2)):
        acc += sq[:, c]
    for c in range(C):
        enter = c + (size - 1) // 2
        leave = c - size // 2 - 1
        if enter < C:
            acc += sq[:, enter]
        if leave >= 0:
            acc -= sq[:, leave]
        d[:, c] = acc
    return x / (d / x.dtype.type(size))


def cumulative(x, size):
    N, C, S = x.shape
    pad = np.zeros((N, C + size, S), x.dtype)
    pad[:, 1 + size // 2:1 + size // 2 + C] = x * x
    cs = np.cumsum(pad, axis=1)
    return x / ((cs[:, size:size + C] - cs[:, :C]) / x.dtype.type(size))


def main():
    rng = np.random.default_rng(0)
    size = 5
    print(f"{'dtype':<8}{'method':<26}{'max rel err':>14}{'median rel err':>16}")
    for dtype, big in ((np.float32, 1e6), (np.float64, 1e12)):
        x = rng.uniform(0.5, 1.5, (2, 256, 16)).astype(dtype)
        x[:, ::16] = big
        ref = exact(x, size)
        with np.errstate(invalid="ignore", divide="ignore"):  # the cancelled sums hit 0
            methods = {
                "numbanorm (block sums)": nbn.local_response_norm(x, size, 1.0, 1.0, 0.0),
                "running add/subtract": running(x, size),
                "cumulative-sum difference": cumulative(x, size),
            }
        try:
            import torch
            methods["PyTorch 2.13 (avg_pool3d)"] = torch.nn.functional.local_response_norm(
                torch.from_numpy(x), size, 1.0, 1.0, 0.0).numpy()
        except ImportError:
            pass
        for name, y in methods.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.abs(y.astype(np.float64) - ref) / np.abs(ref)
            print(f"{np.dtype(dtype).name:<8}{name:<26}{np.nanmax(rel):>14.2e}"
                  f"{np.nanmedian(rel):>16.2e}")


if __name__ == "__main__":
    main()
