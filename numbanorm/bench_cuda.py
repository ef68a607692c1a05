"""GPU timings: `numbanorm bench --device cuda` (see numbanorm.bench for the CPU table).

Each op forward and backward on device arrays, against PyTorch's CUDA kernels on the same
tensors when PyTorch with CUDA is installed, timed interleaved (see numbanorm.bench). Times
are medians of repeats, each repeat a loop of calls closed by a device synchronisation. GB/s
counts what the pass must move (forward: read x, write y; backward: read x and dy, write dx);
the reference bandwidth is a device-to-device copy of 1 GiB measured in the same run (read +
write counted).
"""
import json
import sys

import numpy as np

from .bench import (LRN, MEAN_WEIGHT, VAR_WEIGHT, Progress, _gate, _paired_ratio, _summary,
                    _time, _time_paired, _torch_reference, column_notes, np_dtype)

# The H100 shapes of issue 3 (float32), and two of them in 16 bits (issue 27).
STANDARD = [
    ("layer_norm", (32768, 4096), "float32"), ("layer_norm", (65536, 1024), "float32"),
    ("layer_norm", (262144, 128), "float32"), ("rms_norm", (32768, 4096), "float32"),
    ("batch_norm", (128, 256, 56, 56), "float32"), ("batch_norm", (65536, 1024), "float32"),
    ("group_norm", (64, 256, 64, 64), "float32"), ("instance_norm", (64, 256, 64, 64), "float32"),
] + [(op, shape, dt) for dt in ("bfloat16", "float16")
     for op, shape in (("layer_norm", (32768, 4096)), ("batch_norm", (128, 256, 56, 56)))] + [
    # the data family (issue 28), forward, against the same expression in PyTorch CUDA
    ("zscore_axis0", (65536, 1024), "float32"), ("zscore_axis1", (65536, 1024), "float32"),
    ("minmax_scale", (65536, 1024), "float32"), ("normalize", (65536, 1024), "float32"),
    # issue 31: against the reference modules on PyTorch CUDA (numbanorm.bench._torch_reference)
    ("switch_norm", (32, 64, 56, 56), "float32"),
    ("batch_instance_norm", (32, 64, 56, 56), "float32"),
    ("local_response_norm", (32, 64, 56, 56), "float32"),
    # issue 32: (N, H, W, C) images, channel_axis=-1, against PyTorch's channels_last tensors
    # (numbanorm's group/instance norm run through a channels-first device copy)
    ("batch_norm_nhwc", (32, 56, 56, 256), "float32"),
    ("group_norm_nhwc", (32, 56, 56, 256), "float32")]

# data functions: forward only (their backward passes run on the host; see the README)
DATA = {
    "zscore_axis0": (lambda nbn, x: nbn.zscore(x, 0),
                     lambda t: (t - t.mean(0)) / t.std(0, correction=0)),
    "zscore_axis1": (lambda nbn, x: nbn.zscore(x, 1),
                     lambda t: (t - t.mean(1, keepdim=True)) / t.std(1, correction=0,
                                                                      keepdim=True)),
    "minmax_scale": (lambda nbn, x: nbn.minmax_scale(x),
                     lambda t: (t - t.amin(0)) / (t.amax(0) - t.amin(0))),
    "normalize": (lambda nbn, x: nbn.normalize(x),
                  lambda t: __import__("torch").nn.functional.normalize(t)),
}


def _sync():
    from numba import cuda
    cuda.synchronize()


def _median_time(fn, repeats, min_run):
    return _time(fn, repeats, min_run, sync=_sync)


def copy_bandwidth(nbytes=1 << 30, repeats=5):
    from numba import cuda
    n = nbytes // 4
    a = cuda.device_array(n, np.float32)
    b = cuda.device_array(n, np.float32)
    med, _, _ = _median_time(lambda: b.copy_to_device(a), repeats, 0.05)
    return 2 * n * 4 / med / 1e9


def _numbanorm(op, xd, w, b, C):
    import numbanorm as nbn
    if op.endswith("_nhwc"):
        fwd = {"batch_norm_nhwc": lambda: nbn.batch_norm_forward(xd, None, None, w, b, True,
                                                                channel_axis=-1),
               "group_norm_nhwc": lambda: nbn.group_norm_forward(xd, 32, w, b, channel_axis=-1),
               "instance_norm_nhwc": lambda: nbn.instance_norm_forward(
                   xd, weight=w, bias=b, channel_axis=-1)}[op]
        return fwd, getattr(nbn, op[:-5] + "_backward")
    if op == "layer_norm":
        fwd = lambda: nbn.layer_norm_forward(xd, C, w, b)  # noqa: E731
        return fwd, nbn.layer_norm_backward
    if op == "rms_norm":
        return (lambda: nbn.rms_norm_forward(xd, C, w)), nbn.rms_norm_backward
    if op == "group_norm":
        return (lambda: nbn.group_norm_forward(xd, 32, w, b)), nbn.group_norm_backward
    if op == "instance_norm":
        return (lambda: nbn.instance_norm_forward(xd, weight=w, bias=b)), \
            nbn.instance_norm_backward
    if op == "switch_norm":
        return (lambda: nbn.switch_norm_forward(xd, MEAN_WEIGHT, VAR_WEIGHT, None, None, w, b,
                                               training=True)), nbn.switch_norm_backward
    if op == "batch_instance_norm":
        gate = _gate(C).astype(np.float32)
        return (lambda: nbn.batch_instance_norm_forward(xd, gate, None, None, w, b, True)), \
            nbn.batch_instance_norm_backward
    if op == "local_response_norm":
        return (lambda: nbn.local_response_norm_forward(xd, *LRN)), \
            lambda dy, saved: (nbn.local_response_norm_backward(dy, saved),)
    return (lambda: nbn.batch_norm_forward(xd, None, None, w, b, training=True)), \
        nbn.batch_norm_backward


def _torch(op, x, w, b, dy, dtype):
    import torch
    import torch.nn.functional as TF
    tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]

    def t(a, grad=False):  # from the float32 values (torch.tensor takes no bfloat16 array)
        return torch.tensor(a, device="cuda").to(tdt).requires_grad_(grad)
    xt, wt, bt, dyt = t(x, True), t(w, True), t(b, True), t(dy)
    C = wt.shape[0]
    leaf = xt
    if op.endswith("_nhwc"):  # the (N, H, W, C) memory as a channels_last tensor
        op = op[:-5]
        xt, dyt = xt.permute(0, 3, 1, 2), dyt.permute(0, 3, 1, 2)
    fwd = {
        "layer_norm": lambda t: TF.layer_norm(t, (C,), wt, bt),
        "rms_norm": lambda t: TF.rms_norm(t, (C,), wt),
        "group_norm": lambda t: TF.group_norm(t, 32, wt, bt),
        "instance_norm": lambda t: TF.instance_norm(t, weight=wt, bias=bt),
        "batch_norm": lambda t: TF.batch_norm(t, None, None, wt, bt, training=True),
        "local_response_norm": lambda t: TF.local_response_norm(t, *LRN),
    }.get(op) or (lambda t: _torch_reference(op, torch, t, wt, bt)())

    def forward():
        with torch.no_grad():
            fwd(xt)
    y = fwd(xt)
    inputs = ((leaf, wt) if op == "rms_norm" else (leaf,) if op == "local_response_norm"
              else (leaf, wt, bt))

    def backward():
        torch.autograd.grad(y, inputs, dyt, retain_graph=True)
    return forward, backward, torch.cuda.synchronize


def _data_case(op, x, repeats, min_run, bandwidth, with_torch, dtype):
    """A data function's forward on the device against its PyTorch CUDA expression."""
    import numbanorm as nbn
    from numba import cuda
    ours, expr = DATA[op]
    xd = cuda.to_device(x)
    impls = {"numbanorm": lambda: ours(nbn, xd)}
    if with_torch:
        import torch
        xt = torch.tensor(x, device="cuda")

        def theirs():
            with torch.no_grad():
                expr(xt)
        impls["torch"] = theirs
    samples = _time_paired(impls, repeats, min_run, sync=_sync)
    med, lo, hi = _summary(samples["numbanorm"])
    gbs = 2 * x.nbytes / med / 1e9
    return [dict(op=op, shape=list(x.shape), dtype=dtype, pass_="forward", median_s=med,
                 min_s=lo, max_s=hi, gb_per_s=gbs, pct_copy=100 * gbs / bandwidth,
                 vs_torch=_paired_ratio(samples["torch"], samples["numbanorm"])
                 if with_torch else None)]


def run_case(op, shape, repeats, min_run, bandwidth, with_torch, dtype="float32"):
    from numba import cuda
    rng = np.random.default_rng(0)
    dt = np_dtype(dtype)
    x = (rng.standard_normal(shape, dtype=np.float32) + 0.5).astype(dt).astype(np.float32)
    if op in DATA:
        return _data_case(op, x, repeats, min_run, bandwidth, with_torch, dtype)
    dy = rng.standard_normal(shape, dtype=np.float32).astype(dt).astype(np.float32)
    C = shape[-1] if op in ("layer_norm", "rms_norm") or op.endswith("_nhwc") else shape[1]
    w = rng.standard_normal(C, dtype=np.float32).astype(dt).astype(np.float32)
    b = rng.standard_normal(C, dtype=np.float32).astype(dt).astype(np.float32)
    xd, dyd, wd, bd = (cuda.to_device(a.astype(dt)) for a in (x, dy, w, b))
    fwd, bwd = _numbanorm(op, xd, wd, bd, C)
    _, saved = fwd()
    rows = []
    nbytes = {"forward": 2 * x.size * dt.itemsize, "backward": 3 * x.size * dt.itemsize}
    impls = {"forward": {"numbanorm": fwd}, "backward": {"numbanorm": lambda: bwd(dyd, saved)}}
    if with_torch:
        tf, tb, _ = _torch(op, x, w, b, dy, dtype)
        impls["forward"]["torch"] = tf
        impls["backward"]["torch"] = tb
    samples = {p: _time_paired(impls[p], repeats, min_run, sync=_sync) for p in impls}
    for p in ("forward", "backward"):
        med, lo, hi = _summary(samples[p]["numbanorm"])
        gbs = nbytes[p] / med / 1e9
        theirs = samples[p].get("torch")
        rows.append(dict(op=op, shape=list(shape), dtype=dtype, pass_=p, median_s=med,
                         min_s=lo, max_s=hi,
                         gb_per_s=gbs, pct_copy=100 * gbs / bandwidth,
                         vs_torch=None if theirs is None else
                         _paired_ratio(theirs, samples[p]["numbanorm"])))
    return rows


def run(cases=None, repeats=5, min_run=0.2, with_torch=True, as_json=False, progress=None):
    progress = progress or sys.stderr  # looked up per call: the stream may be replaced
    import numbanorm
    facts = numbanorm.info()
    if not facts.get("gpu"):
        raise numbanorm.CudaUnavailableError(facts.get("gpu_unavailable", "no GPU"))
    if with_torch:
        try:
            import torch
            with_torch = torch.cuda.is_available()
        except ImportError:
            with_torch = False
    from ._device import _simulated
    bandwidth = copy_bandwidth(1 << 20 if _simulated() else 1 << 30)
    rows = []
    cases = cases or STANDARD
    steps = Progress(len(cases), progress)
    for i, (op, shape, dtype) in enumerate(cases, 1):
        steps.step(i, f"{op} {shape} {dtype}")
        rows += run_case(op, shape, repeats, min_run, bandwidth, with_torch, dtype)
    if as_json:
        return json.dumps(dict(gpu=facts["gpu"], copy_gb_per_s=bandwidth, rows=rows), indent=1)
    torch_column = any(r["vs_torch"] is not None for r in rows)
    lines = [f"GPU: {facts['gpu']}; device copy bandwidth {bandwidth:.0f} GB/s "
             f"(read + write); medians of {repeats}",
             f"{'op':20s} {'shape':20s} {'dtype':9s} {'pass':8s} {'median':>10s} {'GB/s':>8s} "
             f"{'% copy':>7s}" + (f" {'vs torch':>9s}" if torch_column else "")]
    for r in rows:
        vs = "-" if r["vs_torch"] is None else f"{r['vs_torch']:.2f}x"
        lines.append(f"{r['op']:20s} {str(tuple(r['shape'])):20s} {r['dtype']:9s} "
                     f"{r['pass_']:8s} "
                     f"{r['median_s'] * 1e6:8.1f}us {r['gb_per_s']:8.0f} {r['pct_copy']:6.0f}%"
                     + (f" {vs:>9s}" if torch_column else ""))
    if not torch_column:
        lines.append("PyTorch with CUDA is not installed here: no 'vs torch' column")
    lines += column_notes(["median", "GB/s"] + (["vs"] if torch_column else []))
    lines.append("  % copy: GB/s as a percentage of the device copy bandwidth measured at the "
                 "start")
    return "\n".join(lines)
