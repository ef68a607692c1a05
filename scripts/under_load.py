"""Per-call latency of the bench's small and medium cases on a quiet and on a busy machine
(issue 29): numbanorm, NumPy and PyTorch, forward (the plain call each library times in
`numbanorm bench`).

First quiet, then with `--busy` processes spinning (default 2, bounded: each stops by itself
after --limit seconds, and all are killed when the measurement ends). Per case and library,
`--calls` single calls are timed one by one (default 500; the first of each is a warm-up and
not counted); prints median, p90 and max in microseconds, and the busy median over the quiet
one.

    python scripts/under_load.py [--calls 500] [--busy 2] [--limit 300]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

from numbanorm.bench import num_groups, numbanorm_impl, numpy_impl, torch_impl

CASES = [("layer_norm", (1, 8)), ("layer_norm", (64, 1024)), ("batch_norm", (8, 32, 32, 32)),
         ("instance_norm", (8, 32, 32, 32)), ("group_norm", (8, 256, 32, 32)),
         ("layer_norm", (16384, 128))]
_SPIN = "import time\nend = time.time() + {limit}\nwhile time.time() < end:\n    pass\n"


def _impls(op, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[-1] if op == "layer_norm" else shape[1]
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    assert op != "group_norm" or num_groups(C) > 1
    impls = {"numbanorm": numbanorm_impl(op, x, w, b, dy)[2],
             "numpy": numpy_impl(op, x, w, b, dy)[0]}
    try:
        impls["torch"] = torch_impl(op, x, w, b, dy)[0]
    except ImportError:
        pass
    return impls


def _latencies(fn, calls):
    fn()
    out = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out * 1e6


def _measure(calls):
    res = {}
    for op, shape in CASES:
        for name, fn in _impls(op, shape).items():
            res[(op, shape, name)] = _latencies(fn, calls)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--busy", type=int, default=2, help="busy processes during the second run")
    p.add_argument("--limit", type=float, default=300, help="seconds a busy process lives")
    args = p.parse_args()
    import numba
    print(f"{os.cpu_count()} cores, Numba threads {numba.get_num_threads()}, threading layer "
          f"{numba.config.THREADING_LAYER}; load average {os.getloadavg()[0]:.2f}")
    quiet = _measure(args.calls)
    spin = _SPIN.format(limit=args.limit)
    busy_procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.busy)]
    try:
        time.sleep(1.0)
        busy = _measure(args.calls)
    finally:
        for proc in busy_procs:
            proc.kill()
    print(f"{args.calls} calls each, microseconds; busy: {args.busy} spinning processes")
    print(f"{'case':34s} {'library':10s} {'quiet med':>10s} {'busy med':>10s} {'busy p90':>10s}"
          f" {'busy max':>10s} {'busy/quiet':>10s}")
    for key, q in quiet.items():
        op, shape, name = key
        b = busy[key]
        qm, bm = np.median(q), np.median(b)
        print(f"{op + ' ' + str(shape):34s} {name:10s} {qm:10.1f} {bm:10.1f} "
              f"{np.percentile(b, 90):10.1f} {b.max():10.1f} {bm / qm:9.2f}x")


if __name__ == "__main__":
    main()
