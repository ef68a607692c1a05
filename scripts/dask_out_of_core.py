"""Out of core: standardise a float32 zarr array larger than the run's memory along axis 0 with
numbanorm on Dask, write it back to zarr, and check it; then what a Dask user writes today on
the same array and scheduler. A script, not a test: it writes tens of GiB.

    python scripts/dask_out_of_core.py --gib 8 --memory 2.5 [--dir /tmp/nn_ooc] [--keep]
    python scripts/dask_out_of_core.py --in-memory 2 [--rounds 5]

1. Makes (once) an uncompressed zarr array of --gib GiB, float32, 64 columns, chunks of
   262144 rows (64 MiB), each column with its own mean (up to 1e4) and spread.
2. Runs each job in a child process confined to --memory GiB by a Linux memory cgroup (v1 or
   v2, where writable; the limit covers the page cache too) and reports its wall time, peak
   resident memory (getrusage) and the cgroup's peak:
   - numbanorm: nbn.zscore(x, axis=0) -> to_zarr; nbn.moments(x, 0) stored beside it;
   - dask: ((x - x.mean(0)) / x.std(0)) -> to_zarr;
   - dask-ml (when installed): StandardScaler().fit(x).transform(x) -> to_zarr.
   The threaded scheduler, as many threads as cores, for all three.
3. Checks numbanorm's output: each column's mean and M2 recomputed in float64 with NumPy, a
   chunk at a time (two passes: the mean, then squared deviations about it), against the stored
   statistics; and rows sampled from every chunk of the output against (x - mean)/std from
   those statistics.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

COLS = 64
ROWS_PER_CHUNK = 262144


def make(path, gib):
    import zarr
    rows = int(gib * 2 ** 30 // (COLS * 4)) // ROWS_PER_CHUNK * ROWS_PER_CHUNK
    if os.path.exists(path):
        z = zarr.open_array(path, mode="r")
        if z.shape == (rows, COLS):
            return z.shape
        shutil.rmtree(path)
    z = zarr.create_array(path, shape=(rows, COLS), chunks=(ROWS_PER_CHUNK, COLS),
                          dtype="float32", compressors=None, fill_value=0)
    means = np.linspace(-1e4, 1e4, COLS).astype(np.float32)
    stds = np.geomspace(1e-2, 1e2, COLS).astype(np.float32)
    for k in range(rows // ROWS_PER_CHUNK):
        rng = np.random.default_rng(k)
        block = rng.standard_normal((ROWS_PER_CHUNK, COLS), dtype=np.float32) * stds + means
        z[k * ROWS_PER_CHUNK:(k + 1) * ROWS_PER_CHUNK] = block
    return z.shape


def job(kind, src, dst, stats_path):
    """Runs in the confined child: one job, its report on stdout as JSON."""
    import dask
    import dask.array as da
    import numbanorm as nbn
    x = da.from_zarr(src)
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        if kind == "numbanorm":
            # the statistics the check reads are the zscore's own: one shared reduction
            m = nbn.moments(x, 0)
            count, mean, m2, _ = dask.compute(m.count, m.mean, m.m2,
                                              nbn.zscore(x, 0).to_zarr(dst, overwrite=True,
                                                                      compute=False))
            np.savez(stats_path, count=count, mean=mean, m2=m2)
            t_stats = None
        elif kind == "dask":
            t_stats = None
            ((x - x.mean(0)) / x.std(0)).to_zarr(dst, overwrite=True)
        else:
            from dask_ml.preprocessing import StandardScaler
            t_stats = None
            StandardScaler().fit(x).transform(x).to_zarr(dst, overwrite=True)
    wall = time.perf_counter() - t0
    print(json.dumps({"kind": kind, "wall_s": wall, "stats_s": t_stats,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 2 ** 20}))


def _cgroup(limit_bytes):
    """(path of a fresh memory cgroup limited to limit_bytes, 'v1'/'v2'), or (None, reason)."""
    for root, version, limit_file in (("/sys/fs/cgroup/memory", "v1", "memory.limit_in_bytes"),
                                      ("/sys/fs/cgroup", "v2", "memory.max")):
        path = os.path.join(root, f"numbanorm_ooc_{os.getpid()}")
        try:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, limit_file), "w") as f:
                f.write(str(limit_bytes))
            return path, version
        except OSError:
            continue
    return None, "no writable memory cgroup (the run is not confined)"


def _cgroup_peak(path, version):
    name = "memory.max_usage_in_bytes" if version == "v1" else "memory.peak"
    try:
        with open(os.path.join(path, name)) as f:
            return int(f.read()) / 2 ** 30
    except OSError:
        return None


def run_confined(kind, src, dst, stats_path, limit_gib):
    path, version = _cgroup(int(limit_gib * 2 ** 30))
    cmd = [sys.executable, __file__, "--job", kind, "--src", src, "--dst", dst, "--stats",
           stats_path]
    if path is None:
        print(f"  ({version})", flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
    else:
        # the child moves itself into the cgroup before Python starts numbanorm
        pre = f"echo $$ > {os.path.join(path, 'cgroup.procs')} && exec " + " ".join(cmd)
        res = subprocess.run(["bash", "-c", pre], capture_output=True, text=True)
    report = {"kind": kind, "returncode": res.returncode}
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if lines:
        report.update(json.loads(lines[-1]))
    else:
        report["error"] = (res.stderr or res.stdout)[-800:]
    if path is not None:
        report["cgroup_peak_gib"] = _cgroup_peak(path, version)
        report["cgroup"] = version
        try:
            os.rmdir(path)
        except OSError:
            pass
    return report


def check(src, dst, stats_path, sample_rows=64):
    """Column statistics in float64 from NumPy, two passes a chunk at a time, against the
    stored ones; sampled rows of every output chunk against (x - mean)/std."""
    import zarr
    x = zarr.open_array(src, mode="r")
    y = zarr.open_array(dst, mode="r")
    st = np.load(stats_path)
    n = x.shape[0]
    total = np.zeros(COLS)
    for k in range(0, n, ROWS_PER_CHUNK):
        total += x[k:k + ROWS_PER_CHUNK].astype(np.float64).sum(axis=0)
    mean = total / n
    m2 = np.zeros(COLS)
    for k in range(0, n, ROWS_PER_CHUNK):
        m2 += ((x[k:k + ROWS_PER_CHUNK].astype(np.float64) - mean) ** 2).sum(axis=0)
    worst_rows = 0.0
    rng = np.random.default_rng(0)
    std = np.sqrt(st["m2"] / st["count"])
    for k in range(0, n, ROWS_PER_CHUNK):
        rows = np.sort(rng.choice(ROWS_PER_CHUNK, sample_rows, replace=False)) + k
        ref = (x.get_orthogonal_selection((rows, slice(None))).astype(np.float64)
               - st["mean"]) / std
        got = y.get_orthogonal_selection((rows, slice(None))).astype(np.float64)
        worst_rows = max(worst_rows, float(np.abs(got - ref).max()))
    return {"mean_rel_err": float(np.max(np.abs(st["mean"] - mean) / np.sqrt(m2 / n))),
            "m2_rel_err": float(np.max(np.abs(st["m2"] - m2) / m2)),
            "max_abs_err_sampled_rows": worst_rows, "rows_checked": n // ROWS_PER_CHUNK
            * sample_rows}


def in_memory(gib, rounds):
    """The same three jobs on an in-memory Dask array (from_array of NumPy, 64 MiB chunks),
    stored into a preallocated NumPy array with dask.array.store, threaded scheduler:
    interleaved rounds, medians and ranges. Here the computation, not the disk, sets the
    time."""
    import dask
    import dask.array as da
    import numbanorm as nbn
    rows = int(gib * 2 ** 30 // (COLS * 4)) // ROWS_PER_CHUNK * ROWS_PER_CHUNK
    rng = np.random.default_rng(0)
    host = (rng.standard_normal((rows, COLS), dtype=np.float32)
            * np.geomspace(1e-2, 1e2, COLS).astype(np.float32)
            + np.linspace(-1e4, 1e4, COLS).astype(np.float32))
    x = da.from_array(host, chunks=(ROWS_PER_CHUNK, COLS))
    out = np.empty_like(host)
    jobs = {"numbanorm": lambda: nbn.zscore(x, 0),
            "dask": lambda: (x - x.mean(0)) / x.std(0)}
    try:
        from dask_ml.preprocessing import StandardScaler
        jobs["dask-ml"] = lambda: StandardScaler().fit(x).transform(x)
    except ImportError:
        pass
    times = {k: [] for k in jobs}
    with dask.config.set(scheduler="threads"):
        for job in jobs.values():
            da.store(job(), out)
        for r in range(rounds):
            for name in (list(jobs) if r % 2 else list(jobs)[::-1]):
                t0 = time.perf_counter()
                da.store(jobs[name](), out)
                times[name].append(time.perf_counter() - t0)
    print(f"in memory: {rows} x {COLS} float32 ({host.nbytes / 2 ** 30:.1f} GiB), chunks of "
          f"{ROWS_PER_CHUNK} rows, stored into a NumPy array; medians of {rounds} rounds")
    ours = np.median(times["numbanorm"])
    for name, ts in times.items():
        ts = np.array(ts)
        print(f"  {name:10s} {np.median(ts):7.2f} s ({ts.min():.2f}-{ts.max():.2f})  "
              f"{np.median(ts) / ours:.2f}x numbanorm's time")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in-memory", type=float, metavar="GIB",
                   help="instead: the three jobs on an in-memory Dask array of GIB GiB")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--gib", type=float, default=8.0)
    p.add_argument("--memory", type=float, default=2.5, help="GiB the jobs may use")
    p.add_argument("--dir", default="/tmp/numbanorm_ooc")
    p.add_argument("--keep", action="store_true", help="keep the zarr arrays afterwards")
    p.add_argument("--only", action="append", choices=["numbanorm", "dask", "dask-ml"])
    p.add_argument("--job")
    p.add_argument("--src")
    p.add_argument("--dst")
    p.add_argument("--stats")
    a = p.parse_args()
    if a.job:
        return job(a.job, a.src, a.dst, a.stats)
    if a.in_memory:
        return in_memory(a.in_memory, a.rounds)
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "x.zarr")
    t0 = time.perf_counter()
    shape = make(src, a.gib)
    print(f"input: {src}, {shape}, float32, {shape[0] * COLS * 4 / 2 ** 30:.1f} GiB "
          f"(made or found in {time.perf_counter() - t0:.0f} s); memory limit {a.memory} GiB; "
          f"{os.cpu_count()} cores", flush=True)
    stats_path = os.path.join(a.dir, "stats.npz")
    kinds = a.only or ["numbanorm", "dask", "dask-ml"]
    reports = []
    for kind in kinds:
        if kind == "dask-ml":
            try:
                import dask_ml  # noqa: F401
            except ImportError:
                print("dask-ml is not installed: skipped")
                continue
        dst = os.path.join(a.dir, f"y_{kind}.zarr")
        r = run_confined(kind, src, dst, stats_path, a.memory)
        reports.append(r)
        print(json.dumps(r), flush=True)
        if kind == "numbanorm" and r.get("returncode") == 0:
            c = check(src, dst, stats_path)
            print("check:", json.dumps(c), flush=True)
        if kind != "numbanorm" or not a.keep:
            shutil.rmtree(dst, ignore_errors=True)
    if not a.keep:
        shutil.rmtree(a.dir, ignore_errors=True)
    ok = [r for r in reports if r.get("returncode") == 0]
    ours = next((r for r in ok if r["kind"] == "numbanorm"), None)
    for r in ok:
        if ours and r is not ours:
            print(f"{r['kind']}: {r['wall_s'] / ours['wall_s']:.2f}x numbanorm's time")


if __name__ == "__main__":
    main()
