"""What a fresh output costs: layer_norm and rms_norm on float32 (8, 512, 4096), forward and
backward, each allocating its output against writing into a preallocated one (out=, dx_out=).
All eight calls are timed interleaved (one run of each per round, the order reversed every
other round); prints the median and interquartile range of each.

    python scripts/alloc_vs_out.py [rounds]      (default 15)
"""
import sys
import time

import numpy as np

import numbanorm as nb


def main(rounds=15):
    shape, L = (8, 512, 4096), 4096
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) + 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(L)).astype(np.float32)
    b = (0.1 * rng.standard_normal(L)).astype(np.float32)
    out = np.empty_like(x)
    _, sl = nb.layer_norm_forward(x, L, w, b)
    _, sr = nb.rms_norm_forward(x, L, w)
    calls = {
        "layer_norm forward, allocating": lambda: nb.layer_norm(x, L, w, b),
        "layer_norm forward, out=": lambda: nb.layer_norm(x, L, w, b, out=out),
        "rms_norm forward, allocating": lambda: nb.rms_norm(x, L, w),
        "rms_norm forward, out=": lambda: nb.rms_norm(x, L, w, out=out),
        "layer_norm backward, allocating": lambda: nb.layer_norm_backward(dy, sl),
        "layer_norm backward, dx_out=": lambda: nb.layer_norm_backward(dy, sl, dx_out=out),
        "rms_norm backward, allocating": lambda: nb.rms_norm_backward(dy, sr),
        "rms_norm backward, dx_out=": lambda: nb.rms_norm_backward(dy, sr, dx_out=out),
    }
    for f in calls.values():
        f()
    times = {k: [] for k in calls}
    items = list(calls.items())
    for r in range(rounds):
        for name, f in (items if r % 2 else items[::-1]):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    for name, t in times.items():
        q1, med, q3 = np.quantile(np.array(t) * 1e3, [0.25, 0.5, 0.75])
        print(f"{name:34s} {med:7.2f} ms  ({q1:.2f}-{q3:.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
