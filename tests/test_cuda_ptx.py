"""Every CUDA kernel compiles for a real GPU (sm_90, the H100), also where there is none.

The simulator runs the kernels as Python and never compiles them; this test records the
argument types of every kernel launch in the simulator and compiles each kernel with those
types through numba-cuda's real compiler (NVVM), then assembles it with ptxas when found
(tests/cuda_ptx.py). It needs numba-cuda with its CUDA libraries (`pip install
"numba-cuda[cu13]"`; CI installs it) and skips without them."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "cuda_ptx.py")


def _run(step, path, simulator):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1" if simulator else "0")
    if simulator:  # small blocks, as in conftest: the multi-block paths run on tiny shapes
        env.update(NUMBANORM_CUDA_THREADS="8", NUMBANORM_CUDA_TARGET_BLOCKS="4")
    else:  # the real launch configuration
        env.pop("NUMBANORM_CUDA_THREADS", None)
        env.pop("NUMBANORM_CUDA_TARGET_BLOCKS", None)
    return subprocess.run([sys.executable, SCRIPT, step, path], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="numba-cuda is not installed")
def test_every_kernel_compiles_for_sm90(tmp_path):
    sigs = str(tmp_path / "signatures.json")
    rec = _run("record", sigs, simulator=True)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    record = json.load(open(sigs))
    kernels = {tuple(k) for k in record["kernels"]}
    assert len(kernels) >= 17, kernels  # both kernel modules were scanned
    dtypes = {a.split("(")[1].split(",")[0] for _, _, args in record["signatures"]
              for a in args[:1]}
    assert {"float32", "float64"} <= dtypes
    out = _run("compile", sigs, simulator=False)
    if out.returncode == 3:
        pytest.skip(out.stdout.strip())
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(record['signatures'])} of {len(record['signatures'])} kernel signatures " \
           "compiled" in out.stdout
