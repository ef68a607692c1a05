"""`numbanorm warmup`: compile the CPU kernels that common calls need into Numba's on-disk cache
ahead of time (a container image's build step, a CI job's setup), so that no later process
waits for compilation.

Each op runs forward and backward on small arrays (the serial kernels) and on arrays just large
enough for the parallel ones, with and without affine parameters, in each dtype asked for
(16-bit dtypes with 16-bit and with float32 parameters); batch_norm in training and eval, on
(N, C) and (N, C, H, W); layer_norm and rms_norm also on long rows (the kernels that take rows two
at a time); switch_norm in training and eval, exact and reference, on (N, C) and (N, C, H, W);
batch_instance_norm in training and eval; local_response_norm; group_norm and instance_norm on
channels-last images too (channel_axis=-1); the fused add_layer_norm and add_rms_norm; the
data functions along the
leading, the trailing and the middle axes, NaN omitted and propagated, and the scalers; "sparse"
(with scipy installed) the sparse data family on CSR and CSC matrices with int32 indices. What a
call with other argument types needs (read-only or non-contiguous arrays, say) compiles on first
use as before.
"""
import time

import numpy as np

from . import _cache
from . import adaptive as A
from . import functional as F
from . import scaling, stats
from ._config import SERIAL_MAX_ELEMENTS

LAYERS = ("layer_norm", "rms_norm", "batch_norm", "group_norm", "instance_norm", "switch_norm",
          "batch_instance_norm", "local_response_norm", "add_layer_norm", "add_rms_norm")
DATA = ("zscore", "minmax_scale", "normalize", "moments", "scalers", "sparse")
OPS = LAYERS + DATA
DTYPES = ("float32", "float64", "float16", "bfloat16")
# Ops whose forwards leave rows that need moments' rare paths to a redo kernel compiled only
# for such data (cpu._moments.moments): warmup gives them a NaN row too.
REDO_OPS = ("layer_norm", "rms_norm", "group_norm", "instance_norm", "add_layer_norm",
            "add_rms_norm")
DEFAULT_DTYPES = ("float32", "float64")
# Ops that share kernels, warmed in one process under --jobs (apart, each would compile the
# shared kernels again), and their cold seconds in float32 + float64 on the 2-core machine
# (layer_norm's 34 s compiles rms_norm's, group_norm's 1.6 s instance_norm's kernels too): the
# biggest go first, each to the least loaded process.
GROUPS = ((("zscore", "moments", "minmax_scale", "scalers"), 42),
          (("layer_norm", "rms_norm", "group_norm", "instance_norm"), 35),
          (("batch_norm",), 23), (("sparse",), 20), (("normalize",), 7),
          (("switch_norm", "batch_instance_norm"), 15), (("local_response_norm",), 19),
          (("add_layer_norm", "add_rms_norm"), 12))


def _line(op, seconds, compiled, loaded):
    """The report line of one op (the --jobs parent reads its subprocesses' lines back)."""
    return (f"{op:14s} {seconds:7.1f} s   {compiled:3d} kernels compiled, "
            f"{loaded:3d} loaded from the cache")


def _dtype(name):
    if name == "bfloat16":
        import ml_dtypes  # the optional extra; a clear ImportError without it
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _shapes(op):
    """(small, parallel) input shapes of op, and extra ones that take other kernels."""
    big = 4 * SERIAL_MAX_ELEMENTS  # above the serial threshold
    if op in ("layer_norm", "rms_norm"):
        return [(4, 64), (big // 256, 256), (16, 4096)]          # the last: row pairs
    if op in ("add_layer_norm", "add_rms_norm"):
        return [(4, 64), (big // 256, 256)]
    if op == "batch_norm":
        return [(8, 16, 4, 4), (16, 16, 32, 32), (64, 16), (big // 64, 64)]
    if op in ("group_norm", "instance_norm"):  # the last: few large channels-last images,
        return [(4, 8, 4, 4), (8, 16, 32, 32), (2, 32, 32, 32)]  # split (cpu.channels_last)
    if op in ("batch_instance_norm", "local_response_norm"):
        return [(4, 8, 4, 4), (8, 16, 32, 32)]
    if op == "switch_norm":
        return [(4, 8, 4, 4), (8, 16, 32, 32), (64, 16)]
    return [(64, 16), (big // 16, 16), (4, 3, 8, 8), (16, 3, 32, 32)]


def _layer_calls(op, x, p):
    """Forward and backward of op on x with parameters of dtype p, with and without them."""
    C = x.shape[-1] if op in ("layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm") \
        else x.shape[1]
    w, b = np.ones(C, p), np.zeros(C, p)
    dy = np.ones_like(x)
    for weight, bias in ((w, b), (None, None)):
        if op == "layer_norm":
            runs = [lambda: F.layer_norm_forward(x, C, weight, bias)]
        elif op == "rms_norm":
            runs = [lambda: F.rms_norm_forward(x, C, weight)]
        elif op == "group_norm":
            runs = [lambda: F.group_norm_forward(x, 2, weight, bias)]
            runs += _channels_last_runs(x, p, weight is not None)
        elif op in ("add_layer_norm", "add_rms_norm"):
            r = np.ones_like(x)
            args = (weight, bias) if op == "add_layer_norm" else (weight,)
            runs = [lambda: getattr(F, f"{op}_forward")(x, r, C, *args)[::2]]
        elif op == "switch_norm":
            K = 3 if x.ndim > 2 else 2
            rm, rv = np.zeros(C, p), np.ones(C, p)
            runs = [lambda t=t, r=r: A.switch_norm_forward(x, np.zeros(K), np.zeros(K), rm, rv,
                                                           weight, bias, t, reference=r)
                    for t in (True, False) for r in (False, True)]
        elif op == "batch_instance_norm":
            rm, rv, gate = np.zeros(C, p), np.ones(C, p), np.full(C, 0.5, p)
            runs = [lambda t=t: A.batch_instance_norm_forward(x, gate, rm, rv, weight, bias, t)
                    for t in (True, False)]
        elif op == "local_response_norm":
            runs = [lambda: F.local_response_norm_forward(x, 5)] if weight is not None else []
        elif op == "instance_norm":
            rm, rv = np.zeros(C, p), np.ones(C, p)
            runs = [lambda: F.instance_norm_forward(x, rm, rv, weight, bias, True),
                    lambda: F.instance_norm_forward(x, rm, rv, weight, bias, False)]
            runs += _channels_last_runs(x, p, weight is not None, instance=True)
        else:
            rm, rv = np.zeros(C, p), np.ones(C, p)
            runs = [lambda: F.batch_norm_forward(x, rm, rv, weight, bias, True),
                    lambda: F.batch_norm_forward(x, rm, rv, weight, bias, False)]
        for run in runs:
            y, saved = run()
            getattr(A if op in A.__all__ else F, f"{op}_backward")(dy, saved)
    if op in REDO_OPS:  # a NaN row: the rows kernels' redo kernels (cpu.rows.forward_redo)
        xn = x.copy()
        xn.flat[0] = np.nan
        if op.startswith("add_"):
            getattr(F, op)(xn, xn, C, *((w, b) if op == "add_layer_norm" else (w,)))
        else:
            {"layer_norm": lambda: F.layer_norm(xn, C, w, b),
             "rms_norm": lambda: F.rms_norm(xn, C, w),
             "group_norm": lambda: F.group_norm(xn, 2, w, b),
             "instance_norm": lambda: F.instance_norm(xn, weight=w, bias=b)}[op]()


def _channels_last_runs(x, p, affine, instance=False):
    """group_norm (or instance_norm) forwards of x read as (N, *spatial, C) images
    (channel_axis=-1: numbanorm.cpu.channels_last)."""
    C = x.shape[-1]
    w, b = (np.ones(C, p), np.zeros(C, p)) if affine else (None, None)
    if instance:
        return [lambda: F.instance_norm_forward(x, None, None, w, b, channel_axis=-1)]
    return [lambda: F.group_norm_forward(x, 2, w, b, channel_axis=-1)]


def _sparse_calls(x):
    """The sparse data family on x as CSR and CSC (int32 indices), with a NaN."""
    try:
        import scipy.sparse as sp
    except ImportError:  # nothing to warm: sparse input needs scipy
        return
    from . import preprocessing
    x = x.copy()
    x[np.abs(x) < 1] = 0
    x.flat[3] = np.nan
    for m in (sp.csr_array(x), sp.csc_array(x)):
        for axis in (0, 1):
            for p in (2.0, 1.0):
                scaling.normalize(m, p=p, dim=axis)
            for policy in ("propagate", "omit"):
                stats.moments(m, axis, policy)
        for scaler in (preprocessing.StandardScaler(with_mean=False),
                       preprocessing.MaxAbsScaler()):
            scaler.fit(m).transform(m)
        m.data[np.isnan(m.data)] = 1.0
        preprocessing.Normalizer().fit_transform(m)


def _data_calls(op, x):
    if op == "sparse":
        if x.ndim == 2:
            _sparse_calls(x)
        return
    axes = (0, x.ndim - 1, tuple(range(2, x.ndim)) if x.ndim > 2 else 1)
    for axis in axes:
        if op == "zscore":
            for policy in ("propagate", "omit"):
                z, saved = scaling.zscore_forward(x, axis=axis, nan_policy=policy)
                scaling.zscore_backward(np.ones_like(z), saved)
        elif op == "minmax_scale":
            scaling.minmax_scale_forward(x, axis=axis)
        elif op == "normalize":
            for p in (2.0, 1.0):
                scaling.normalize_forward(x, p=p, dim=axis)
        elif op == "moments":
            for policy in ("propagate", "omit"):
                stats.moments(x, axis, policy)
    if op == "scalers" and x.ndim == 2:
        from . import preprocessing
        for scaler in (preprocessing.StandardScaler(), preprocessing.MinMaxScaler(),
                       preprocessing.Normalizer()):
            scaler.fit(x).transform(x)


def warmup(ops=None, dtypes=None, report=print, jobs=1):
    """Compile the kernels of common calls into Numba's on-disk cache (see the module
    docstring); what `numbanorm warmup` runs.

    Parameters
    ----------
    ops : sequence of str, optional
        Names from OPS; default all of them.
    dtypes : sequence of str, optional
        Names from DTYPES; default float32 and float64. bfloat16 needs ml_dtypes.
    report : callable or None, default print
        Called with one line per op; None prints nothing.
    jobs : int, default 1
        Processes compiling at once: above 1, groups of ops that share kernels (GROUPS) go
        to that many `numbanorm warmup` subprocesses (the cache is safe for several
        processes at once: tests/test_cache.py), and the returned counts are theirs.

    Returns
    -------
    dict
        {op: (seconds, compiled, loaded)}: the kernels this process compiled into the cache
        for op, and those it loaded from the cache.

    Raises
    ------
    ValueError
        For an unknown op or dtype name.
    """
    ops = list(ops or OPS)
    dtypes = list(dtypes or DEFAULT_DTYPES)
    bad = sorted(set(ops) - set(OPS)) or sorted(set(dtypes) - set(DTYPES))
    if bad:
        raise ValueError(f"warmup: unknown op or dtype {bad[0]!r}; ops: {', '.join(OPS)}; "
                         f"dtypes: {', '.join(DTYPES)}")
    if jobs > 1:
        return _in_processes(ops, dtypes, report, jobs)
    rng = np.random.default_rng(0)
    out = {}
    for op in ops:
        t0 = time.perf_counter()
        c0, l0 = _cache.counts()
        for name in dtypes:
            dt = _dtype(name)
            params = [dt] + ([np.dtype(np.float32)] if dt.itemsize == 2 else [])
            for shape in _shapes(op):
                x = rng.standard_normal(shape).astype(dt)
                if op in LAYERS:
                    for p in params:
                        _layer_calls(op, x, p)
                else:
                    _data_calls(op, x)
        c1, l1 = _cache.counts()
        out[op] = (time.perf_counter() - t0, c1 - c0, l1 - l0)
        if report:
            report(_line(op, *out[op]))
    return out


def _in_processes(ops, dtypes, report, jobs):
    """warmup(ops, dtypes) in at most `jobs` subprocesses, one list of GROUPS per process."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor
    loads = [[0.0, []] for _ in range(jobs)]
    for group, seconds in GROUPS:
        mine = [op for op in ops if op in group]
        if mine:
            least = min(loads, key=lambda l: l[0])
            least[0] += seconds
            least[1] += mine
    lists = [l[1] for l in loads if l[1]]

    def run(names):
        cmd = [sys.executable, "-m", "numbanorm", "warmup", "--ops", *names, "--dtypes",
               *dtypes]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"numbanorm warmup --ops {' '.join(names)} failed:\n"
                               + done.stderr[-2000:])
        return done.stdout

    with ThreadPoolExecutor(len(lists)) as pool:
        outputs = list(pool.map(run, lists))
    out = {}
    for text in outputs:
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] in OPS:   # _line's fields
                out[parts[0]] = (float(parts[1]), int(parts[3]), int(parts[6]))
    if report:
        for op in ops:
            report(_line(op, *out[op]))
    return {op: out[op] for op in ops}
