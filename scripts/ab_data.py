"""Paired A/B of the data functions and the Dask path against another commit's package.

    git archive <commit> numbanorm | tar -x -C /tmp/old && mv /tmp/old/numbanorm /tmp/old/nbold
    python scripts/ab_data.py /tmp/old [--rounds 15]

Both packages in one process, interleaved per round (which goes first alternating). Prints per
case each side's median and the median and range of the per-round ratios old/new (above 1:
this checkout is faster).
"""
import argparse
import importlib
import sys
import time

import numpy as np

import numbanorm as new


def cases(nb, da):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 512)).astype(np.float32)
    x4 = rng.standard_normal((16, 32, 32, 32)).astype(np.float32)
    tiny = rng.standard_normal((8, 4)).astype(np.float32)
    xd = da.from_array(rng.standard_normal((1 << 20, 16)).astype(np.float32),
                       chunks=(1 << 17, 16))
    return {
        "zscore axis0 4096x512": lambda: nb.zscore(x, 0),
        "zscore axis1 4096x512": lambda: nb.zscore(x, 1),
        "zscore omit (0,2,3) 16x32x32x32": lambda: nb.zscore(x4, (0, 2, 3), nan_policy="omit"),
        "zscore (0,2) interleaved": lambda: nb.zscore(x4, (0, 2)),
        "minmax_scale axis0": lambda: nb.minmax_scale(x),
        "normalize dim1": lambda: nb.normalize(x),
        "moments axis0": lambda: nb.moments(x, 0),
        "zscore tiny 8x4": lambda: nb.zscore(tiny, 0),
        "dask zscore 1Mx16": lambda: nb.zscore(xd, 0).compute(),
        "dask layer_norm 1Mx16": lambda: nb.layer_norm(xd, 16).compute(),
        "dask moments 1Mx16": lambda: nb.moments(xd, 0).compute(),
    }


def _time(fn, min_run=0.05):
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= min_run:
            return t / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old_root")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", help="only the cases whose name contains this")
    args = ap.parse_args()
    sys.path.insert(0, args.old_root)
    old = importlib.import_module("nbold")
    import dask.array as da
    a, b = cases(old, da), cases(new, da)
    for name in [n for n in a if not args.only or args.only in n]:
        ta, tb = [], []
        for r in range(args.rounds):
            first, second = (a, b) if r % 2 == 0 else (b, a)
            t1, t2 = _time(first[name]), _time(second[name])
            (ta, tb)[r % 2].append(t1)
            (tb, ta)[r % 2].append(t2)
        ratio = np.array(ta) / np.array(tb)
        print(f"{name:34s} old {np.median(ta) * 1e3:9.3f} ms  new {np.median(tb) * 1e3:9.3f} ms"
              f"  old/new {np.median(ratio):.3f} [{ratio.min():.3f}, {ratio.max():.3f}]",
              flush=True)


if __name__ == "__main__":
    main()
