"""Every CUDA kernel compiles for a real GPU (sm_90, the H100), also where there is none.

The simulator runs the kernels as Python and never compiles them; this test records the
argument types of every kernel launch in the simulator and compiles each kernel with those
types through numba-cuda's real compiler (NVVM), then assembles it with ptxas when found
(tests/cuda_ptx.py). It needs numba-cuda with its CUDA libraries (`pip install
"numba-cuda[cu13]"`, ~520 MB, not in the test extra; CI installs it) and skips without them,
before recording anything."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "cuda_ptx.py")
# compile processes: the signatures are shared out, one process per core (up to this many)
PARTS = max(1, min(4, os.cpu_count() or 1))


def _start(step, path, simulator, *extra):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1" if simulator else "0")
    if simulator:  # small blocks, as in conftest: the multi-block paths run on tiny shapes
        env.update(NUMBANORM_CUDA_THREADS="8", NUMBANORM_CUDA_TARGET_BLOCKS="4")
    else:  # the real launch configuration
        env.pop("NUMBANORM_CUDA_THREADS", None)
        env.pop("NUMBANORM_CUDA_TARGET_BLOCKS", None)
    return subprocess.Popen([sys.executable, SCRIPT, step, path, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="numba-cuda is not installed")
def test_every_kernel_compiles_for_sm90(tmp_path):
    code, out, err = _finish(_start("probe", "-", False))  # a compiler first: the recording
    if code == 3:  # takes a minute
        pytest.skip(out.strip())
    assert code == 0, out + err
    # the simulator runs record the dtypes in two processes (bfloat16 arithmetic in Python
    # is slow), merged into one signature file
    halves = [("float32", "bfloat16"), ("float64", "float16")]
    parts = [str(tmp_path / f"signatures{i}.json") for i in range(len(halves))]
    procs = [_start("record", p, True, ",".join(h)) for p, h in zip(parts, halves)]
    record = {"kernels": [], "signatures": []}
    for proc, p in zip(procs, parts):
        code, out, err = _finish(proc)
        assert code == 0, out + err
        got = json.load(open(p))
        record["kernels"] = got["kernels"]
        record["signatures"] += got["signatures"]
    sigs = str(tmp_path / "signatures.json")
    with open(sigs, "w") as f:
        json.dump(record, f)
    kernels = {tuple(k) for k in record["kernels"]}
    assert len(kernels) >= 17, kernels  # both kernel modules were scanned
    dtypes = {[a for a in args if "(" in a][0].split("(")[1].split(",")[0]
              for _, _, args in record["signatures"]}  # of each launch's first array
    assert {"float32", "float64", "float16", "bfloat16"} <= dtypes
    procs = [_start("compile", sigs, False, f"{i}/{PARTS}") for i in range(PARTS)]
    results = [_finish(p) for p in procs]
    if any(code == 3 for code, _, _ in results):
        pytest.skip(results[0][1].strip())
    compiled = 0
    for i, (code, out, err) in enumerate(results):
        print(out)
        assert code == 0, out + err
        n = len(record["signatures"][i::PARTS])
        assert f"{n} of {n} kernel signatures compiled" in out, out
        compiled += n
    assert compiled == len(record["signatures"])
