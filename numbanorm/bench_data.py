"""`numbanorm bench --suite data`: the data-normalization functions and a streaming scaler,
timed interleaved against what a user would otherwise call, when installed: the NumPy
expression, scipy, scikit-learn, numbagg and PyTorch.

Per case: numbanorm's median time and range, its effective GB/s over three passes of the data
(a read for the statistics, a read and a write for the transform: 3 x the array's bytes), the
percentage of the three-pass floor (3 x bytes at the measured triad bandwidth, over the time),
each alternative's time ratio (their time / ours, paired per repeat as in `numbanorm bench`),
the fastest alternative, and the largest difference from a float64 computation, relative to
the output's scale. NaN cases put 1% NaN in the data and omit them.

16-bit cases (--dtype float16 / bfloat16: the float32 cases in 16 bits) time numbanorm against
NumPy in the 16-bit dtype, NumPy's route through float32 ('np-f32': x.astype(np.float32),
the expression, the result cast back, inside the timed call), PyTorch's 16-bit CPU ops and
numbanorm's own float32 on the same values ('f32'). scipy, scikit-learn and numbagg do not
compute in 16 bits and are left out there.
"""
import math

import numpy as np

from .bench import (HALF, _p90, _paired_ratio, _summary, _tensor, _time_paired, column_notes,
                    measure_cases, np_dtype)

# (function, shape, axis, dtype, nan): the shapes of the data-normalization issue
SHAPES = [((1_000_000, 32), 0), ((32, 250_000), 1), ((64, 3, 224, 224), (2, 3))]
CASES = ([("zscore", s, a, d, False) for s, a in SHAPES for d in ("float32", "float64")]
         + [("zscore", s, a, d, True) for s, a in SHAPES for d in ("float32", "float64")]
         + [("minmax_scale", s, a, d, False) for s, a in SHAPES for d in ("float32", "float64")]
         + [("normalize", s, a, d, False) for s, a in SHAPES for d in ("float32", "float64")]
         + [("stream", (1_000_000, 32), 0, d, False) for d in ("float32", "float64")])
STREAM_CHUNKS = 100



def _installed(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def _ours(fn, x, axis, nan, out):
    import numbanorm as nbn
    if fn == "zscore":
        policy = "omit" if nan else "propagate"
        return lambda: nbn.zscore(x, axis, nan_policy=policy, out=out)
    if fn == "minmax_scale":
        return lambda: nbn.minmax_scale(x, axis=axis, out=out)
    return lambda: nbn.normalize(x, 2.0, axis, out=out)


def _numpy(fn, x, ax, nan):
    """The NumPy expression of fn on x, in x's dtype."""
    if fn in ("zscore", "stream"):
        if nan:
            return (x - np.nanmean(x, ax, keepdims=True)) / np.nanstd(x, ax, keepdims=True)
        return (x - x.mean(ax, keepdims=True)) / x.std(ax, keepdims=True)
    if fn == "minmax_scale":
        lo = np.nanmin(x, ax, keepdims=True)
        return (x - lo) / (np.nanmax(x, ax, keepdims=True) - lo)
    return x / np.maximum(np.sqrt((x * x).sum(ax, keepdims=True)), x.dtype.type(1e-12))


def _half_alternatives(fn, x, axis, nan, out):
    """The 16-bit case's alternatives (see the module docstring)."""
    import numbanorm as nbn
    x32 = x.astype(np.float32)
    alt = {}
    if fn == "stream":
        chunks = np.array_split(x32, STREAM_CHUNKS)

        def stream32():
            s = nbn.StandardScaler()
            for c in chunks:
                s.partial_fit(c)
            return [s.transform(c)[0, 0] for c in chunks]
        return {"f32": stream32}
    alt["numpy"] = lambda: _numpy(fn, x, axis, nan)
    alt["np-f32"] = lambda: _numpy(fn, x.astype(np.float32), axis, nan).astype(x.dtype)
    torch = _installed("torch")
    if torch and not nan:
        t = _tensor(torch, x)
        dim = axis if isinstance(axis, int) else tuple(axis)
        if fn == "zscore":
            alt["torch"] = lambda: (t - t.mean(dim, keepdim=True)) / t.std(
                dim, correction=0, keepdim=True)
        elif fn == "minmax_scale":
            alt["torch"] = lambda: (t - t.amin(dim, keepdim=True)) / (
                t.amax(dim, keepdim=True) - t.amin(dim, keepdim=True))
        else:
            import torch.nn.functional as TF
            alt["torch"] = lambda: TF.normalize(t, 2.0, dim)
    alt["f32"] = _ours(fn, x32, axis, nan, None if out is None else np.empty_like(x32))
    return alt


def _alternatives(fn, x, axis, nan):
    """{name: callable} of what a user would otherwise write, where installed and applicable."""
    alt = {}
    ax = axis
    if fn == "zscore":
        alt["numpy"] = lambda: _numpy(fn, x, ax, nan)
        stats = _installed("scipy") and __import__("scipy.stats").stats
        if stats:
            policy = "omit" if nan else "propagate"
            alt["scipy"] = lambda: stats.zscore(x, ax, nan_policy=policy)
        if x.ndim == 2 and ax == 0 and _installed("sklearn"):
            from sklearn.preprocessing import StandardScaler
            alt["sklearn"] = lambda: StandardScaler().fit_transform(x)
        nb = _installed("numbagg")
        if nb:
            alt["numbagg"] = lambda: (x - nb.nanmean(x, axis=ax)[_expand(x, ax)]) / nb.nanstd(
                x, axis=ax)[_expand(x, ax)]
        torch = _installed("torch")
        if torch and not nan:
            t = torch.from_numpy(x)
            dim = ax if isinstance(ax, int) else tuple(ax)
            alt["torch"] = lambda: (t - t.mean(dim, keepdim=True)) / t.std(
                dim, correction=0, keepdim=True)
    elif fn == "minmax_scale":
        alt["numpy"] = lambda: _numpy(fn, x, ax, nan)
        if x.ndim == 2 and _installed("sklearn"):
            from sklearn.preprocessing import minmax_scale
            alt["sklearn"] = lambda: minmax_scale(x, axis=ax)
        torch = _installed("torch")
        if torch:
            t = torch.from_numpy(x)
            dim = ax if isinstance(ax, int) else tuple(ax)

            def torch_minmax():
                lo = t.amin(dim, keepdim=True)
                return (t - lo) / (t.amax(dim, keepdim=True) - lo)
            alt["torch"] = torch_minmax
    else:
        alt["numpy"] = lambda: _numpy(fn, x, ax, nan)
        if x.ndim == 2 and _installed("sklearn"):
            from sklearn.preprocessing import normalize
            alt["sklearn"] = lambda: normalize(x, axis=ax)
        torch = _installed("torch")
        if torch:
            import torch.nn.functional as TF
            t = torch.from_numpy(x)
            dim = ax if isinstance(ax, int) else tuple(ax)
            alt["torch"] = lambda: TF.normalize(t, 2.0, dim)
    return alt


def _expand(x, ax):
    """Index that re-inserts the reduced axes of a numbagg result for broadcasting."""
    axes = (ax,) if isinstance(ax, int) else ax
    return tuple(None if a in axes else slice(None) for a in range(x.ndim))


def _stream(x):
    """A stream through a StandardScaler, numbanorm's and scikit-learn's (when installed):
    partial_fit on each of STREAM_CHUNKS chunks, then each chunk transformed and handed on
    (a streaming pipeline writes it out and drops it; here its first value is kept, so both
    scalers reuse freed memory rather than fault in 100 fresh outputs). Returns the
    transformed chunks of a first, untimed pass for the accuracy column."""
    import numbanorm as nbn
    chunks = np.array_split(x, STREAM_CHUNKS)

    def stream(cls):
        def run():
            s = cls()
            for c in chunks:
                s.partial_fit(c)
            return [s.transform(c)[0, 0] for c in chunks], s
        return run
    ours = stream(nbn.StandardScaler)
    alt = {}
    if _installed("sklearn") and x.dtype.itemsize > 2:
        from sklearn.preprocessing import StandardScaler
        alt["sklearn"] = stream(StandardScaler)
    fitted = ours()[1]
    return ours, alt, [fitted.transform(c) for c in chunks]


def _reference(fn, x, axis, nan):
    return _numpy(fn, x.astype(np.float64), axis, True)


def run_case(fn, shape, axis, dtype, nan, repeats, min_run, bandwidth, preallocated):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np_dtype(dtype))
    if nan:
        x.reshape(-1)[rng.choice(x.size, x.size // 100, replace=False)] = np.nan
    out = np.empty_like(x) if preallocated else None
    if fn == "stream":
        ours, alt, parts = _stream(x)
        y = np.concatenate(parts)
    else:
        ours = _ours(fn, x, axis, nan, out)
        alt = None if dtype in HALF else _alternatives(fn, x, axis, nan)
        y = ours()
    if dtype in HALF:
        alt = _half_alternatives(fn, x, axis, nan, out)
    ref = _reference(fn, x, axis, nan)
    err = float(np.nanmax(np.abs(y.astype(np.float64) - ref)) / np.nanmax(np.abs(ref)))
    samples = _time_paired({"numbanorm": ours, **alt}, repeats, min_run)
    med, lo, hi = _summary(samples["numbanorm"])
    gbs = 3 * x.nbytes / med / 1e9
    row = {"function": fn, "shape": list(shape), "axis": axis, "dtype": dtype, "nan": nan,
           "median_s": med, "min_s": lo, "max_s": hi, "p90_s": _p90(samples["numbanorm"]),
           "gb_per_s": gbs,
           "pct_floor": 100 * gbs / bandwidth if bandwidth else None, "max_rel_err": err}
    for name in alt:
        row[f"vs_{name}"] = _paired_ratio(samples[name], samples["numbanorm"])
        row[f"{name}_s"] = float(np.median(samples[name]))
    if alt:
        row["fastest_alternative"] = min(alt, key=lambda k: row[f"{k}_s"])
    return row


def _fmt(rows, bandwidth, threads, preallocated):
    names = [n for n in ("numpy", "np-f32", "scipy", "sklearn", "numbagg", "torch", "f32")
             if any(f"vs_{n}" in r for r in rows)]
    head = (f"{'function':<13}{'shape':<17}{'axis':<7}{'dtype':<9}{'NaN':<4}{'median':>11}"
            f"{'p90':>11}{'range':>19}{'GB/s':>7}{'%floor':>7}"
            + "".join(f"{'vs ' + n:>11}" for n in names) + f"{'max err':>9}")
    lines = [f"numbanorm bench --suite data: {threads} thread(s), triad bandwidth "
             f"{bandwidth:.1f} GB/s; GB/s and %floor count three passes (3 x bytes); "
             "'vs X' = X's time / numbanorm's time", head, "-" * len(head)]
    for r in rows:
        rng_ = f"{r['min_s'] * 1e3:.3g}-{r['max_s'] * 1e3:.3g} ms"
        ax = r["axis"] if isinstance(r["axis"], int) else ",".join(map(str, r["axis"]))
        vs = "".join(f"{(format(r['vs_' + n], '.2f') + 'x') if 'vs_' + n in r else '-':>11}"
                     for n in names)
        pct = f"{r['pct_floor']:.0f}" if r["pct_floor"] is not None else "-"
        fn = r["function"] if r["function"] != "stream" else f"stream{STREAM_CHUNKS}"
        lines.append(f"{fn:<13}{'x'.join(map(str, r['shape'])):<17}{ax:<7}{r['dtype']:<9}"
                     f"{'yes' if r['nan'] else 'no':<4}{r['median_s'] * 1e3:>9.4g}ms"
                     f"{r['p90_s'] * 1e3:>9.4g}ms{rng_:>19}"
                     f"{r['gb_per_s']:>7.1f}{pct:>7}{vs}{r['max_rel_err']:>9.1e}")
    others = [[r[k] for k in r if k.startswith("vs_") and k != "vs_f32"] for r in rows]
    fastest = [min(v) for v in others if v]
    if fastest:
        lines.append(f"against the fastest alternative of each case: slowest "
                     f"{min(fastest):.2f}x, geometric mean "
                     f"{math.exp(sum(map(math.log, fastest)) / len(fastest)):.2f}x")
    if preallocated:
        lines.append("numbanorm wrote into preallocated arrays (out=); the others allocated")
    lines += column_notes(["median", "p90", "range", "GB/s", "%floor"]
                          + (["vs"] if names else []) + ["max err"],
                          "three passes over the data: 3 x its bytes")
    lines.append(f"  stream{STREAM_CHUNKS}: StandardScaler.partial_fit over {STREAM_CHUNKS} "
                 "chunks, then each chunk transformed")
    return "\n".join(lines)


def run(cases=None, repeats=5, min_run=0.05, threads=None, as_json=False, preallocated=False,
        progress=None):
    import json

    def describe(case):
        fn, shape, _, dtype, nan = case
        return f"{fn} {'x'.join(map(str, shape))} {dtype}{' NaN' if nan else ''}"

    def run_one(case, bandwidth):
        return run_case(*case, repeats, min_run, bandwidth, preallocated)
    threads, bandwidth, rows, warnings = measure_cases(
        CASES if cases is None else cases, threads, progress, describe, run_one,
        torch_threads=True)
    if as_json:
        return json.dumps({"threads": threads, "triad_gb_per_s": bandwidth,
                           "outputs_preallocated": preallocated, "load_warnings": warnings,
                           "rows": rows}, indent=1)
    return "\n".join(warnings + [_fmt(rows, bandwidth, threads, preallocated)])
