"""Compilation and the on-disk kernel cache (issue 29), each in fresh processes on an empty
cache directory of their own, counted with Numba's dispatcher statistics (never timings):
import compiles nothing; `numbanorm warmup` fills the cache so that a later process compiles
nothing; processes starting together on one empty cache all get right results and leave it
whole."""
import json
import os
import subprocess
import sys

import numpy as np

# A user's normalize calls, on other shapes than warmup's: (1000, 32) along each axis and
# images along their spatial axes, serial and parallel kernels. Prints the largest error
# against NumPy and the process's (compiled, loaded) kernel counts.
_CALLS = """
import json, sys
import numpy as np
import numbanorm as nbn
from numbanorm import _cache
rng = np.random.default_rng(int(sys.argv[1]))
err = 0.0
for shape, axis in (((1000, 32), 1), ((1000, 32), 0), ((40, 3, 16, 16), (2, 3)),
                    ((20, 5), 1)):
    x = rng.standard_normal(shape).astype(np.float32)
    y = nbn.normalize(x, dim=axis)
    ref = x / np.maximum(np.sqrt((x.astype(np.float64) ** 2).sum(axis, keepdims=True)), 1e-12)
    err = max(err, float(np.abs(y - ref).max()))
print(json.dumps({"err": err, "counts": _cache.counts()}))
"""


def _env(cache):
    return dict(os.environ, NUMBA_CACHE_DIR=str(cache))


def _run(code, env, *args):
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True,
                         capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_compiles_nothing(tmp_path):
    code = ("import json, numbanorm\nfrom numbanorm import _cache\n"
            "ds = _cache.dispatchers()\n"  # imports every kernel module
            "print(json.dumps([len(ds), _cache.compiled_signatures(), _cache.counts()]))")
    n, signatures, (compiled, loaded) = _run(code, _env(tmp_path))
    assert n > 50                      # the kernels were found
    assert signatures == 0 and compiled == 0 and loaded == 0
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []   # no cache file written


def test_warmup_fills_the_cache(tmp_path):
    env = _env(tmp_path)
    # two processes (--jobs 2): normalize, and minmax_scale in the group of the data kernels
    out = subprocess.run([sys.executable, "-m", "numbanorm", "warmup", "--ops", "normalize",
                          "minmax_scale", "--dtypes", "float32", "--jobs", "2"], env=env,
                         check=True, capture_output=True, text=True, timeout=600).stdout
    lines = [line.split() for line in out.splitlines()[1:]]
    assert [w[0] for w in lines] == ["normalize", "minmax_scale"]
    assert all(int(w[3]) > 0 for w in lines)   # each compiled kernels
    res = _run(_CALLS, env, "1")
    compiled, loaded = res["counts"]
    assert compiled == 0, f"{compiled} kernels compiled after warmup"
    assert loaded > 0
    assert res["err"] < 1e-6


def test_processes_share_an_empty_cache(tmp_path):
    """numbagg made its cache opt-in after crashes with parallel=True + cache=True (numbagg
    #345, numba #7518): four processes compile the same kernels into one empty directory at
    once; then a fifth loads every kernel from it."""
    env = _env(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", _CALLS, str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["err"] < 1e-6 for r in results), results
    assert sum(r["counts"][0] for r in results) > 0      # they did compile
    last = _run(_CALLS, env, "9")
    assert last["err"] < 1e-6
    assert last["counts"][0] == 0 and last["counts"][1] > 0, last


def test_rare_paths_compile_only_when_needed(tmp_path):
    """The common rows kernels compile without moments' rare paths (cpu._moments.moments): an
    ordinary layer_norm and add_layer_norm leave their redo kernels uncompiled and unloaded;
    a row that needs them (NaN here) brings them, and the right result."""
    code = """
import json
import numpy as np
import numbanorm as nbn
from numbanorm.cpu import rows
x = np.random.default_rng(0).standard_normal((300, 256)).astype(np.float32)
nbn.layer_norm(x, 256)
nbn.add_layer_norm(x, x, 256)
before = [len(rows.forward_redo.signatures), len(rows.add_forward_redo.signatures)]
x[5, 3] = np.nan
y = nbn.layer_norm(x, 256)
ok = bool(np.isnan(y[5]).all() and not np.isnan(np.delete(y, 5, axis=0)).any())
print(json.dumps([before, len(rows.forward_redo.signatures), ok]))
"""
    before, after, ok = _run(code, _env(tmp_path))
    assert before == [0, 0] and after == 1 and ok


def test_counts_see_this_process():
    from numbanorm import _cache
    import numbanorm as nbn
    nbn.normalize(np.ones((3, 4), np.float32))
    assert _cache.compiled_signatures() > 0
    assert _cache.location()
