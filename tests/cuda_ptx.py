"""Compile every numbanorm CUDA kernel with the real CUDA compiler, without a GPU.

Numba's CUDA simulator runs the kernels as Python, so it never types or lowers them: a kernel
that the simulator runs correctly may still fail to compile for a real GPU. This script closes
that gap on machines with numba-cuda and its NVVM/NVRTC libraries but no GPU, in two steps run
as separate processes (the simulator is chosen at import):

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_ptx.py record SIGS.json [DTYPE,...]
        runs every CUDA path of the API on tiny shapes in the simulator (in float32, float64,
        float16 and bfloat16, or the dtypes named) and records each launched kernel with the
        Numba types of its arguments;
    python tests/cuda_ptx.py compile SIGS.json [I/N]
        compiles each (kernel, types) to PTX for sm_90 (the H100) and, when ptxas is found,
        assembles it and prints registers, spills and shared memory per kernel; with I/N only
        the signatures whose index is I modulo N (N processes share the work).

`python tests/cuda_ptx.py probe -` only checks that a CUDA compiler is here (exit 0 or 3).

Exit status of `compile`: 0 all compiled, 1 a kernel failed, 3 no CUDA compiler here (NVVM or
NVRTC missing). tests/test_cuda_ptx.py runs both steps.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types as pytypes

import numpy as np

KERNEL_MODULES = ("numbanorm.cuda.rows", "numbanorm.cuda.channels")
COMPUTE_CAPABILITY = (9, 0)


def _kernels(module):
    """{name: kernel} of the kernels (not device functions) defined in module (simulator)."""
    return {name: obj for name, obj in vars(module).items()
            if type(obj).__name__ == "FakeCUDAKernel" and not obj._device
            and obj.fn.__module__ == module.__name__}


DTYPES = ("float32", "float64", "float16", "bfloat16")


def _record(path, dtypes=",".join(DTYPES)):
    import importlib

    import numba

    import numbanorm as nbn
    from numbanorm.cuda import _host

    seen = set()

    class Recorder:
        def __init__(self, module, name, kernel):
            self.module, self.name, self.kernel = module, name, kernel

        def __getitem__(self, config):
            launch = self.kernel[config]

            def call(*args):
                seen.add((self.module, self.name, tuple(_typeof(a) for a in args)))
                return launch(*args)
            return call

    expected = set()
    for modname in KERNEL_MODULES:
        module = importlib.import_module(modname)
        for name, kernel in _kernels(module).items():
            expected.add((modname, name))
            setattr(module, name, Recorder(modname, name, kernel))

    cuda = numba.cuda
    rng = np.random.default_rng(0)
    defaults = _host.CUDA_ROW_CHUNK, _host.CUDA_TARGET_BLOCKS
    import ml_dtypes
    for dtype in dtypes.split(","):
        dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
        def d(*shape):
            return cuda.to_device(rng.standard_normal(shape).astype(dtype))

        # a block (or part of one) per row, then rows split into chunks of a block each
        for chunk, target in (defaults, (4, 32)):
            _host.CUDA_ROW_CHUNK, _host.CUDA_TARGET_BLOCKS = chunk, target
            for fwd in (lambda: nbn.layer_norm_forward(d(3, 12), 12, d(12), d(12)),
                        lambda: nbn.rms_norm_forward(d(3, 12), 12, d(12)),
                        lambda: nbn.group_norm_forward(d(2, 6, 4), 3, d(6), d(6)),
                        lambda: nbn.instance_norm_forward(d(2, 3, 8))):
                y, saved = fwd()
                getattr(nbn, saved.op + "_backward")(d(*y.shape), saved)
        rm, rv = d(3), cuda.to_device(np.ones(3, dtype))
        nbn.instance_norm(d(2, 3, 8), rm, rv)
        nbn.batch_norm(d(5, 3), training=True)  # no running buffers
        for shape in ((5, 3, 2, 3), (13, 3)):
            y, saved = nbn.batch_norm_forward(d(*shape), rm, rv, d(3), d(3), training=True)
            nbn.batch_norm_backward(d(*shape), saved)
            y, saved = nbn.batch_norm_forward(d(*shape), rm, rv, d(3), d(3), training=False)
            nbn.batch_norm_backward(d(*shape), saved)
        # the fused residual add + norm (h in x's dtype, and in float32 for 16-bit x), dh given;
        # channel_axis=-1 (batch_norm on columns, group norm through device copies)
        for rdt in (None, np.float32) if dtype.itemsize == 2 else (None,):
            r = d(3, 12) if rdt is None else cuda.to_device(
                rng.standard_normal((3, 12)).astype(rdt))
            y, h, saved = nbn.add_layer_norm_forward(d(3, 12), r, 12, d(12), d(12),
                                                    residual_dtype=rdt)
            nbn.add_layer_norm_backward(d(3, 12), saved, cuda.to_device(
                rng.standard_normal((3, 12)).astype(h.dtype)))
        for fwd in (lambda: nbn.group_norm_forward(d(2, 4, 3, 6), 3, d(6), d(6), channel_axis=-1),
                    lambda: nbn.batch_norm_forward(d(2, 4, 3, 6), None, None, d(6), d(6), True,
                                                  channel_axis=-1)):
            y, saved = fwd()
            getattr(nbn, saved.op + "_backward")(d(*y.shape), saved)
        # the data functions on rows, columns (A > 1), slabs and interleaved axes (a device
        # copy), forward and backward; moments (both NaN policies)
        for shape, axis in (((3, 12), 1), ((2, 5, 3), 1), ((4, 3, 5), (0, 2)),
                            ((3, 4, 5, 2), (0, 2))):
            for fwd, kw in ((nbn.zscore_forward, {"axis": axis}),
                            (nbn.minmax_scale_forward, {"axis": axis}),
                            (nbn.normalize_forward, {"dim": axis})):
                y, saved = fwd(d(*shape), **kw)
                getattr(nbn, saved.op + "_backward")(d(*shape), saved)
        nbn.moments(d(3, 12), 1, "omit")
    launched = {(m, n) for m, n, _ in seen}
    missing = sorted(expected - launched)
    with open(path, "w") as f:
        json.dump({"kernels": sorted(expected), "signatures": sorted(seen)}, f, indent=1)
    if missing:
        print("kernels never launched (extend _record):", missing)
        return 1
    print(f"recorded {len(seen)} signatures of {len(expected)} kernels")
    return 0


def _typeof(a):
    """The Numba type of a kernel argument as text; bfloat16 arrays, which the CPU target's
    typeof does not know, as numba-cuda types them."""
    import numba
    a = getattr(a, "_ary", a)
    if isinstance(a, np.ndarray) and a.dtype.name == "bfloat16":
        layout = "C" if a.flags.c_contiguous else "A"
        return f"array(bfloat16, {a.ndim}d, {layout})"
    return str(numba.typeof(a))


_ARRAY = re.compile(r"(readonly )?array\((\w+), (\d)d, (\w)\)")


def _scalar_type(name):
    from numba import types
    if name == "bfloat16":
        from numba.cuda.types import bfloat16
        return bfloat16
    return getattr(types, name)


def _numba_type(text):
    from numba import types
    m = _ARRAY.fullmatch(text)
    if m:
        return types.Array(_scalar_type(m[2]), int(m[3]), m[4], readonly=bool(m[1]))
    return types.boolean if text == "bool" else _scalar_type(text)


def _ptxas():
    found = shutil.which("ptxas")
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if not found and root and os.path.exists(os.path.join(root, "bin", "ptxas")):
            found = os.path.join(root, "bin", "ptxas")
    return found


def _assemble(ptxas, ptx):
    """ptxas -v's resource line for one kernel ("Used N registers, ...")."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        arch = "sm_%d%d" % COMPUTE_CAPABILITY
        for _ in range(2):
            with open(src, "w") as f:
                f.write(ptx)
            r = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o", os.devnull],
                               capture_output=True, text=True)
            # NVVM may write a newer PTX ISA version than an older ptxas reads; the kernels use
            # nothing beyond sm_90's ISA, so retry with the version ptxas says it reads.
            m = re.search(r"Unsupported \.version .*current version is '([\d.]+)'", r.stderr)
            if not m:
                break
            ptx = re.sub(r"^\.version [\d.]+", ".version " + m[1], ptx, count=1, flags=re.M)
    if r.returncode:
        return "ptxas failed: " + r.stderr.strip()[:300]
    return "; ".join(line.split("info    : ")[-1].strip() for line in r.stderr.splitlines()
                     if "Used" in line or "spill" in line)


def _probe(path=None):
    """0 where a one-line kernel compiles for sm_90 here, 3 (and why) where it cannot."""
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher

    # Device functions ask the current device for its compute capability; there is none.
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(
        compute_capability=COMPUTE_CAPABILITY)

    def probe(a):
        a[0] = 1.0
    try:
        cuda.compile_ptx(probe, (_numba_type("array(float64, 1d, C)"),), cc=COMPUTE_CAPABILITY)
    except Exception as e:  # no NVVM/NVRTC: nothing here can compile CUDA code
        print(f"no CUDA compiler: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return 3
    return 0


def _compile(path, part="0/1"):
    from numba import cuda
    if _probe():
        return 3

    import importlib
    with open(path) as f:
        record = json.load(f)
    ptxas = _ptxas()
    failures = 0
    i, n = (int(s) for s in part.split("/"))
    signatures = record["signatures"][i::n]
    for modname, name, args in signatures:
        kernel = getattr(importlib.import_module(modname), name)
        sig = tuple(_numba_type(a) for a in args)
        dtype = next((a.split("(")[1].split(",")[0] for a in args if "array" in a), "")
        label = f"{modname.rsplit('.', 1)[-1]}.{name}({dtype} x ...)"
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=COMPUTE_CAPABILITY)
        except Exception as e:
            failures += 1
            print(f"FAIL {label}: {type(e).__name__}: {e}")
            continue
        print(f"ok   {label:48s} {_assemble(ptxas, ptx) if ptxas else ''}")
    print(f"{len(signatures) - failures} of {len(signatures)} kernel "
          f"signatures compiled for sm_{COMPUTE_CAPABILITY[0]}{COMPUTE_CAPABILITY[1]}"
          + ("" if ptxas else " (no ptxas: PTX only)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    step, path = sys.argv[1], sys.argv[2]
    steps = {"record": _record, "compile": _compile, "probe": _probe}
    sys.exit(steps[step](path, *sys.argv[3:4]))
