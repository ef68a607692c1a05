"""Paired A/B of layer_norm and rms_norm backward against another commit's package.

Make the other commit importable under another name, then run this from the repository:

    git archive <commit> numbanorm | tar -x -C /tmp/old && mv /tmp/old/numbanorm /tmp/old/nbold
    python scripts/ab_backward.py /tmp/old 8x512x4096 [rounds] [float32|float64]

Both packages run in one process, interleaved (a batch of calls of each per round, the order
reversed every other round). Prints each side's median and the median and interquartile range
of the per-round ratios old/new (above 1: this checkout is faster), with dx_out= and
allocating dx.
"""
import importlib
import sys
import time

import numpy as np

import numbanorm as new


def main(old_dir, shape, rounds=30, dtype="float32"):
    sys.path.insert(0, old_dir)
    old = importlib.import_module("nbold")
    shape = tuple(int(a) for a in shape.split("x"))
    dt, L = np.dtype(dtype), shape[-1]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) + 0.5).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    w = (1 + 0.1 * rng.standard_normal(L)).astype(dt)
    b = (0.1 * rng.standard_normal(L)).astype(dt)
    d_old, d_new = np.empty_like(x), np.empty_like(x)
    so, sn = old.layer_norm_forward(x, L, w, b)[1], new.layer_norm_forward(x, L, w, b)[1]
    ro, rn = old.rms_norm_forward(x, L, w)[1], new.rms_norm_forward(x, L, w)[1]
    calls = {
        "ln_old": lambda: old.layer_norm_backward(dy, so, dx_out=d_old),
        "ln_new": lambda: new.layer_norm_backward(dy, sn, dx_out=d_new),
        "rms_old": lambda: old.rms_norm_backward(dy, ro, dx_out=d_old),
        "rms_new": lambda: new.rms_norm_backward(dy, rn, dx_out=d_new),
        "ln_old_alloc": lambda: old.layer_norm_backward(dy, so),
        "ln_new_alloc": lambda: new.layer_norm_backward(dy, sn),
    }
    for f in calls.values():
        f()
    a, c = old.layer_norm_backward(dy, so), new.layer_norm_backward(dy, sn)
    print("max |dx difference|", np.abs(a[0] - c[0]).max(),
          " dweight relative", np.abs(a[1] - c[1]).max() / np.abs(a[1]).max())
    reps = max(1, int(2e7 // x.size))
    times = {k: [] for k in calls}
    items = list(calls.items())
    for r in range(rounds):
        for name, f in (items if r % 2 else items[::-1]):
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            times[name].append((time.perf_counter() - t0) / reps)
    for name, t in times.items():
        print(f"{name:14s} {np.median(t) * 1e3:.3f} ms")
    for o, n in [("ln_old", "ln_new"), ("rms_old", "rms_new"), ("ln_old_alloc", "ln_new_alloc")]:
        ratio = np.array(times[o]) / np.array(times[n])
        q1, med, q3 = np.quantile(ratio, [0.25, 0.5, 0.75])
        print(f"{o}/{n}: {med:.3f} ({q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], int(args[2]) if len(args) > 2 else 30,
         args[3] if len(args) > 3 else "float32")
