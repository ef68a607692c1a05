"""Paired timing of tiny calls (host overhead) against another commit's package.

Make the other commit importable under another name, as for scripts/ab.py:

    git archive <commit> numbanorm | tar -x -C /tmp/old && mv /tmp/old/numbanorm /tmp/old/nbold
    python scripts/tiny_calls.py /tmp/old [rounds]

Batches of 1000 calls, the two packages alternating which goes first per round; prints the
medians and the median (interquartile range) of the per-round ratios old/new (above 1: this
checkout is faster).
"""
import importlib
import sys
import time

import numpy as np

import numbanorm as new

sys.path.insert(0, sys.argv[1])
old = importlib.import_module("nbold")
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 8)).astype(np.float32)
w = np.ones(8, np.float32); b = np.zeros(8, np.float32)
dy = rng.standard_normal((1, 8)).astype(np.float32)
xb = rng.standard_normal((8, 4, 5, 5)).astype(np.float32)
cases = {}
for name, nb in (("old", old), ("new", new)):
    ln = nb.LayerNorm(8)
    _, s = nb.layer_norm_forward(x, 8, w, b)
    bn = nb.BatchNorm2d(4)
    cases[name] = {
        "layer_norm(1,8)": lambda nb=nb: nb.layer_norm(x, 8, w, b),
        "layer_norm_forward(1,8)": lambda nb=nb: nb.layer_norm_forward(x, 8, w, b),
        "layer_norm_backward(1,8)": lambda nb=nb, s=s: nb.layer_norm_backward(dy, s),
        "LayerNorm call": lambda ln=ln: ln(x),
        "batch_norm(8,4,5,5)": lambda nb=nb: nb.batch_norm(xb, None, None, None, None, True),
        "BatchNorm2d call": lambda bn=bn: bn(xb),
    }
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
reps = 1000
res = {k: {"old": [], "new": []} for k in cases["old"]}
for f in list(cases["old"].values()) + list(cases["new"].values()):
    f()
for r in range(rounds):
    for k in res:
        for side in (("old", "new") if r % 2 else ("new", "old")):
            f = cases[side][k]
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            res[k][side].append((time.perf_counter() - t0) / reps * 1e6)
for k, v in res.items():
    o, n = np.array(v["old"]), np.array(v["new"])
    ratio = o / n
    q1, med, q3 = np.quantile(ratio, [0.25, 0.5, 0.75])
    print(f"{k:26s} old {np.median(o):6.2f} us  new {np.median(n):6.2f} us  old/new {med:.3f} ({q1:.3f}-{q3:.3f})")
