"""`numbanorm bench --suite sparse`: the sparse data family (scipy.sparse CSR input), timed
interleaved against scikit-learn's functions and scalers and scipy's own operations, when
installed.

Functions (each on a CSR matrix of the given shape and density, float32 or float64, int32
indices):

    normalize  numbanorm.normalize(X, 2, dim=1)      sklearn normalize(X)   scipy: norms by
               X.multiply(X).sum(1), then X.multiply(1/norms) (a COO result) and
               diags_array(1/norms) @ X (CSR)
    standard   StandardScaler(with_mean=False).fit_transform(X)  (sklearn's; scipy: mean and
               var by X.mean(0) and X.multiply(X).mean(0), then X.multiply(1/std))
    maxabs     MaxAbsScaler().fit_transform(X)      (sklearn's; scipy: abs(X).max(0), then
               X.multiply(1/max))
    stream     StandardScaler(with_mean=False): partial_fit on each of 100 row chunks, then
               each chunk transformed (sklearn's)

The memory floor counts what the kernels must move: the nonzeros and their indices read once
for the statistics, the nonzeros read once and written once for the transform:
nnz*(itemsize + index size) + 2*nnz*itemsize bytes, at the measured triad bandwidth. 'max err'
is the largest difference of the result's data from a float64 NumPy computation, relative to
the data's scale.
"""
import math

import numpy as np

from .bench import (_p90, _paired_ratio, _summary, _time_paired, column_notes, measure_cases,
                    np_dtype)
from .bench_data import _installed

FUNCTIONS = ("normalize", "standard", "maxabs", "stream")
SHAPES = [((1_000_000, 10_000), 0.001), ((100_000, 100_000), 0.0001)]
SMALL = [((20_000, 2_000), 0.005)]  # --tiny: a smoke run


def cases(shapes=SHAPES):
    """(function, shape, density, dtype) of every function on each (shape, density)."""
    return [(f, s, d, t) for s, d in shapes for t in ("float32", "float64") for f in FUNCTIONS]


CASES = cases()
STREAM_CHUNKS = 100


def _matrix(shape, density, dtype):
    import scipy.sparse as sp
    X = sp.random_array(shape, density=density, format="csr", rng=0, dtype=np.float64)
    X.data = (X.data * 4 - 1).astype(np_dtype(dtype))
    return X


def _chunks(X):
    step = -(-X.shape[0] // STREAM_CHUNKS)
    return [X[k:k + step] for k in range(0, X.shape[0], step)]


def _ours(fn, X):
    import numbanorm as nbn
    if fn == "normalize":
        return lambda: nbn.normalize(X, 2.0, 1)
    if fn == "standard":
        return lambda: nbn.StandardScaler(with_mean=False).fit_transform(X)
    if fn == "maxabs":
        return lambda: nbn.MaxAbsScaler().fit_transform(X)
    return _stream(nbn.StandardScaler, _chunks(X))


def _stream(cls, chunks):
    def run():
        s = cls(with_mean=False)
        for c in chunks:
            s.partial_fit(c)
        return [s.transform(c) for c in chunks][-1]
    return run


def _alternatives(fn, X):
    alt = {}
    skp = _installed("sklearn") and __import__("sklearn.preprocessing").preprocessing
    if skp:
        if fn == "normalize":
            alt["sklearn"] = lambda: skp.normalize(X)
        elif fn == "standard":
            alt["sklearn"] = lambda: skp.StandardScaler(with_mean=False).fit_transform(X)
        elif fn == "maxabs":
            alt["sklearn"] = lambda: skp.MaxAbsScaler().fit_transform(X)
        else:
            alt["sklearn"] = _stream(skp.StandardScaler, _chunks(X))
    import scipy.sparse as sp
    if fn == "normalize":
        def norms():
            n = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
            return 1.0 / np.where(n == 0, 1.0, n)
        alt["scipy"] = lambda: X.multiply(norms()[:, None])
        alt["scipy-diag"] = lambda: sp.diags_array(norms()) @ X
    elif fn == "standard":
        def standard():
            mean = np.asarray(X.mean(axis=0)).ravel()
            var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean * mean
            std = np.sqrt(var)
            return X.multiply((1.0 / np.where(std == 0, 1.0, std))[None, :])
        alt["scipy"] = standard
    elif fn == "maxabs":
        def maxabs():
            m = abs(X).max(axis=0).toarray().ravel()
            return X.multiply((1.0 / np.where(m == 0, 1.0, m))[None, :])
        alt["scipy"] = maxabs
    return alt


def _reference(fn, X):
    """The float64 result's data in X's order (X canonical: every result keeps its pattern)."""
    v = X.data.astype(np.float64)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    cols = X.indices
    n = X.shape[1]
    if fn == "normalize":
        norms = np.sqrt(np.bincount(rows, weights=v * v, minlength=X.shape[0]))
        return v / np.where(norms == 0, 1.0, norms)[rows]
    if fn == "maxabs":
        m = np.zeros(n)
        np.maximum.at(m, cols, np.abs(v))
        return v / np.where(m == 0, 1.0, m)[cols]
    mean = np.bincount(cols, weights=v, minlength=n) / X.shape[0]
    m2 = np.bincount(cols, weights=(v - mean[cols]) ** 2, minlength=n)
    var = (m2 + (X.shape[0] - np.bincount(cols, minlength=n)) * mean * mean) / X.shape[0]
    std = np.sqrt(var)
    return v / np.where(std == 0, 1.0, std)[cols]


def run_case(fn, shape, density, dtype, repeats, min_run, bandwidth):
    X = _matrix(shape, density, dtype)
    ours = _ours(fn, X)
    alt = _alternatives(fn, X)
    y = ours()
    if fn == "stream":
        import numbanorm as nbn
        y = nbn.StandardScaler(with_mean=False).fit(X).transform(X)  # (the fit is checked)
    ref = _reference(fn, X)
    err = float(np.max(np.abs(y.data.astype(np.float64) - ref)) / np.max(np.abs(ref)))
    samples = _time_paired({"numbanorm": ours, **alt}, repeats, min_run)
    med, lo, hi = _summary(samples["numbanorm"])
    floor_bytes = X.nnz * (X.data.itemsize + X.indices.itemsize) + 2 * X.nnz * X.data.itemsize
    gbs = floor_bytes / med / 1e9
    row = {"function": fn, "shape": list(shape), "density": density, "nnz": int(X.nnz),
           "dtype": dtype, "median_s": med, "min_s": lo, "max_s": hi,
           "p90_s": _p90(samples["numbanorm"]), "gb_per_s": gbs,
           "pct_floor": 100 * gbs / bandwidth if bandwidth else None, "max_rel_err": err}
    for name in alt:
        row[f"vs_{name}"] = _paired_ratio(samples[name], samples["numbanorm"])
        row[f"{name}_s"] = float(np.median(samples[name]))
    if alt:
        row["fastest_alternative"] = min(alt, key=lambda k: row[f"{k}_s"])
    return row


def _fmt(rows, bandwidth, threads):
    names = [n for n in ("sklearn", "scipy", "scipy-diag") if any(f"vs_{n}" in r for r in rows)]
    head = (f"{'function':<12}{'shape':<15}{'density':<9}{'dtype':<9}{'median':>11}{'p90':>11}"
            f"{'range':>19}{'GB/s':>7}{'%floor':>7}"
            + "".join(f"{'vs ' + n:>15}" for n in names) + f"{'max err':>9}")
    lines = [f"numbanorm bench --suite sparse: {threads} thread(s), triad bandwidth "
             f"{bandwidth:.1f} GB/s; GB/s and %floor count nnz*(item+index) + 2*nnz*item "
             "bytes; 'vs X' = X's time / numbanorm's time", head, "-" * len(head)]
    for r in rows:
        rng_ = f"{r['min_s'] * 1e3:.3g}-{r['max_s'] * 1e3:.3g} ms"
        vs = "".join(f"{(format(r['vs_' + n], '.2f') + 'x') if 'vs_' + n in r else '-':>15}"
                     for n in names)
        pct = f"{r['pct_floor']:.0f}" if r["pct_floor"] is not None else "-"
        fn = r["function"] if r["function"] != "stream" else f"stream{STREAM_CHUNKS}"
        lines.append(f"{fn:<12}{'x'.join(map(str, r['shape'])):<15}{r['density']:<9g}"
                     f"{r['dtype']:<9}{r['median_s'] * 1e3:>9.4g}ms{r['p90_s'] * 1e3:>9.4g}ms"
                     f"{rng_:>19}{r['gb_per_s']:>7.1f}{pct:>7}{vs}{r['max_rel_err']:>9.1e}")
    fastest = [min(r[k] for k in r if k.startswith("vs_")) for r in rows
               if any(k.startswith("vs_") for k in r)]
    if fastest:
        lines.append(f"against the fastest alternative of each case: slowest "
                     f"{min(fastest):.2f}x, geometric mean "
                     f"{math.exp(sum(map(math.log, fastest)) / len(fastest)):.2f}x")
    lines += column_notes(["median", "p90", "range", "GB/s", "%floor"]
                          + (["vs"] if names else []) + ["max err"],
                          "nnz*(item + index) + 2*nnz*item bytes")
    return "\n".join(lines)


def run(cases=None, repeats=5, min_run=0.05, threads=None, as_json=False, progress=None):
    import json

    def describe(case):
        fn, shape, density, dtype = case
        return f"{fn} {'x'.join(map(str, shape))} at {density:g} {dtype}"

    def run_one(case, bandwidth):
        return run_case(*case, repeats, min_run, bandwidth)
    threads, bandwidth, rows, warnings = measure_cases(
        CASES if cases is None else cases, threads, progress, describe, run_one)
    if as_json:
        return json.dumps({"threads": threads, "triad_gb_per_s": bandwidth,
                           "load_warnings": warnings, "rows": rows}, indent=1)
    return "\n".join(warnings + [_fmt(rows, bandwidth, threads)])
