"""Paired A/B of one op against another commit's package, forward and backward.

Make the other commit importable under another name, then run this from the repository:

    git archive <commit> numbanorm | tar -x -C /tmp/old && mv /tmp/old/numbanorm /tmp/old/nbold
    python scripts/ab.py /tmp/old batch_norm 512x2048 [--rounds 30] [--dtype float32]

Ops as in `numbanorm bench` (batch_norm in training mode with weight and bias; group_norm
with 32 groups, or 1 when C is not a multiple of 32). Both packages run in one process,
interleaved (per round and kind of call, a batch of calls of each, which first alternating), with
out=/dx_out= and allocating. Prints each side's median and the median and interquartile range
of the per-round ratios old/new (above 1: this checkout is faster), and the largest difference
between the two packages' results.
"""
import argparse
import importlib
import sys
import time

import numpy as np

import numbanorm as new


def _calls(nb, op, x, w, b):
    """(forward(out), backward(dy, saved, dx_out)) of op in package nb."""
    C, L = x.shape[1], x.shape[-1]
    if op == "batch_norm":
        return (lambda out=None: nb.batch_norm_forward(x, None, None, w[:C], b[:C], True,
                                                       out=out),
                nb.batch_norm_backward)
    if op == "instance_norm":
        return (lambda out=None: nb.instance_norm_forward(x, weight=w[:C], bias=b[:C], out=out),
                nb.instance_norm_backward)
    if op == "group_norm":
        groups = 32 if C % 32 == 0 else 1
        return (lambda out=None: nb.group_norm_forward(x, groups, w[:C], b[:C], out=out),
                nb.group_norm_backward)
    if op == "layer_norm":
        return (lambda out=None: nb.layer_norm_forward(x, L, w[:L], b[:L], out=out),
                nb.layer_norm_backward)
    if op == "rms_norm":
        return (lambda out=None: nb.rms_norm_forward(x, L, w[:L], out=out),
                nb.rms_norm_backward)
    raise SystemExit(f"unknown op {op!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old_dir")
    p.add_argument("op")
    p.add_argument("shape")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--dtype", default="float32")
    a = p.parse_args()
    sys.path.insert(0, a.old_dir)
    old = importlib.import_module("nbold")
    shape = tuple(int(s) for s in a.shape.split("x"))
    dt = np.dtype(a.dtype)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) + 0.5).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    n = max(shape[1], shape[-1])
    w = (1 + 0.1 * rng.standard_normal(n)).astype(dt)
    b = (0.1 * rng.standard_normal(n)).astype(dt)
    calls = {}
    for name, nb in (("old", old), ("new", new)):
        fwd, bwd = _calls(nb, a.op, x, w, b)
        y, saved = fwd()
        buf = np.empty_like(x)
        calls[f"fwd_{name}"] = lambda fwd=fwd, buf=buf: fwd(out=buf)
        calls[f"fwd_alloc_{name}"] = fwd
        calls[f"bwd_{name}"] = lambda bwd=bwd, s=saved, buf=buf: bwd(dy, s, dx_out=buf)
        calls[f"bwd_alloc_{name}"] = lambda bwd=bwd, s=saved: bwd(dy, s)
        calls[f"result_{name}"] = (y,) + tuple(bwd(dy, saved))
    res_old, res_new = calls.pop("result_old"), calls.pop("result_new")
    for label, r0, r1 in zip(("y", "dx", "dweight", "dbias"), res_old, res_new):
        if r0 is not None:
            scale = max(np.abs(r0).max(), np.finfo(dt).tiny)
            print(f"max |{label} difference| / max |{label}|: {np.abs(r0 - r1).max() / scale:.2e}")
    for f in calls.values():
        f()
    reps = max(1, int(2e7 // x.size))
    times = {k: [] for k in calls}
    kinds = [k[:-4] for k in calls if k.endswith("_old")]
    for r in range(a.rounds):
        # Each kind's old and new batches back to back, which first alternating: a batch
        # after one of its own kind finds its data in cache (reversing a whole round's order
        # instead gave the first item two batches in a row and favoured it by up to 20%).
        for kind in kinds:
            for side in (("_old", "_new") if r % 2 else ("_new", "_old")):
                f = calls[kind + side]
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                times[kind + side].append((time.perf_counter() - t0) / reps)
    print(f"{a.op} {a.shape} {a.dtype}, {a.rounds} rounds of {reps} calls")
    for kind in kinds:
        o, n_ = times[kind + "_old"], times[kind + "_new"]
        ratio = np.array(o) / np.array(n_)
        q1, med, q3 = np.quantile(ratio, [0.25, 0.5, 0.75])
        print(f"{kind:10s} old {np.median(o) * 1e3:8.4f} ms  new {np.median(n_) * 1e3:8.4f} ms"
              f"  old/new {med:.3f} ({q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
