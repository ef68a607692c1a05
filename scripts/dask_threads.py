"""The thread rule inside Dask tasks, measured: numbanorm's zscore and moments on an in-memory
Dask array on the threaded scheduler (one worker thread per core), with the kernels of each
task on 1 Numba thread (numbanorm's default inside Dask) against Numba's default (all cores,
so cores x cores threads in all). Interleaved rounds, medians and ranges.

    python scripts/dask_threads.py [--rows 4000000] [--rounds 9]
"""
import argparse
import os
import time

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--rounds", type=int, default=9)
    a = p.parse_args()
    import dask
    import dask.array as da
    import numba

    import numbanorm as nbn
    from numbanorm import dask as nd
    x = da.from_array(np.random.default_rng(0).standard_normal((a.rows, 32), dtype=np.float32),
                      chunks=(262144, 32))
    jobs = {"zscore": lambda: nbn.zscore(x, 0).sum().compute(),
            "moments": lambda: nbn.moments(x, 0).compute()}
    settings = {"1 thread a task": 1, f"{numba.config.NUMBA_NUM_THREADS} threads a task": 0}
    times = {(j, s): [] for j in jobs for s in settings}
    with dask.config.set(scheduler="threads", num_workers=os.cpu_count()):
        for j in jobs.values():
            j()
        for r in range(a.rounds):
            for jname, job in jobs.items():
                order = list(settings.items())
                for sname, n in (order if r % 2 else order[::-1]):
                    nd.set_task_threads(n)
                    t0 = time.perf_counter()
                    job()
                    times[(jname, sname)].append(time.perf_counter() - t0)
    nd.set_task_threads(1)
    print(f"{a.rows} x 32 float32 in chunks of 262144 rows; threaded scheduler, "
          f"{os.cpu_count()} workers; medians of {a.rounds} interleaved rounds")
    for (jname, sname), ts in times.items():
        ts = np.array(ts) * 1e3
        print(f"{jname:8s} {sname:18s} {np.median(ts):8.1f} ms  ({ts.min():.1f}-{ts.max():.1f})")


if __name__ == "__main__":
    main()
