"""Time to first result (issue 29): each case in a fresh process, first with an empty Numba
cache (cold: its kernels compile), then again with the cache that run left (warm: they load).

Per case, the seconds of the first call alone (data made and libraries imported before the
clock starts). Cases: each op's forward, forward + backward pairs, the README's quick-start
blocks together (its Functional API, Layers and scientific-code examples, PyTorch and
scikit-learn imported before the clock), `import numbanorm` after `import numba`, and the floor
any Numba library pays: the first call of a one-line `@njit(cache=True)` function (cold: Numba
compiles it; warm: it loads it, after Numba's start-up in the process). Your own cache is not
touched.

    python scripts/first_call.py [--case NAME ...] [--repeats 1] [--json]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

SETUP = """
import numpy as np
rng = np.random.default_rng(0)
x4 = rng.standard_normal((16, 64, 32, 32)).astype(np.float32)   # 1M values: parallel kernels
x4_nhwc = np.ascontiguousarray(x4.transpose(0, 2, 3, 1))        # the same, channels-last
d4 = np.ones_like(x4)
w64, b64 = np.ones(64, np.float32), np.zeros(64, np.float32)
mw3, g64 = np.zeros(3), np.full(64, 0.5, np.float32)
X = rng.standard_normal((100_000, 32)).astype(np.float32)
"""

FORWARD = {
    "layer_norm": "nbn.layer_norm(x4, (32, 32))",
    "rms_norm": "nbn.rms_norm(x4, 32)",
    "batch_norm": "nbn.batch_norm(x4, None, None, w64, b64, training=True)",
    "group_norm": "nbn.group_norm(x4, 8, w64, b64)",
    "instance_norm": "nbn.instance_norm(x4)",
    "zscore": "nbn.zscore(X, axis=0)",
    "minmax_scale": "nbn.minmax_scale(X)",
    "normalize": "nbn.normalize(X, dim=1)",
    "moments": "nbn.moments(X, 0)",
    "StandardScaler": "nbn.StandardScaler().fit_transform(X)",
    "switch_norm": "nbn.switch_norm(x4, mw3, mw3, None, None, w64, b64, training=True)",
    "batch_instance_norm": "nbn.batch_instance_norm(x4, g64, None, None, w64, b64, True)",
    "local_response_norm": "nbn.local_response_norm(x4, 5)",
    "group_norm NHWC": "nbn.group_norm(x4_nhwc, 8, w64, b64, channel_axis=-1)",
    "add_layer_norm": "nbn.add_layer_norm(x4, d4, (32, 32))",
}
PAIRS = {
    "layer_norm fwd+bwd": "y, s = nbn.layer_norm_forward(x4, (32, 32)); "
                          "nbn.layer_norm_backward(d4, s)",
    "rms_norm fwd+bwd": "y, s = nbn.rms_norm_forward(x4, 32); nbn.rms_norm_backward(d4, s)",
    "batch_norm fwd+bwd": "y, s = nbn.batch_norm_forward(x4, None, None, w64, b64, "
                          "training=True); nbn.batch_norm_backward(d4, s)",
    "group_norm fwd+bwd": "y, s = nbn.group_norm_forward(x4, 8, w64, b64); "
                          "nbn.group_norm_backward(d4, s)",
    "instance_norm fwd+bwd": "y, s = nbn.instance_norm_forward(x4); "
                             "nbn.instance_norm_backward(d4, s)",
    "zscore fwd+bwd": "z, s = nbn.zscore_forward(X, axis=0); "
                      "nbn.zscore_backward(np.ones_like(z), s)",
    "switch_norm fwd+bwd": "y, s = nbn.switch_norm_forward(x4, mw3, mw3, None, None, w64, b64, "
                           "training=True); nbn.switch_norm_backward(d4, s)",
    "local_response_norm fwd+bwd": "y, s = nbn.local_response_norm_forward(x4, 5); "
                                   "nbn.local_response_norm_backward(d4, s)",
}
README_SECTIONS = ("## Functional API", "## Layers", "## For scientific code")


def _readme_blocks():
    """The python blocks of the README's quick-start sections, in order, as one program."""
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    code = []
    for part in re.split(r"^(?=## )", text, flags=re.M):
        if part.startswith(README_SECTIONS):
            code += re.findall(r"```python\n(.*?)```", part, flags=re.S)
    return "\n".join(code)


def _program(call, kind):
    """A program printing the seconds of `call`, everything else before the clock."""
    pre = "import torch, sklearn.linear_model, sklearn.pipeline\n" if kind == "readme" else ""
    return (f"{pre}import time\nimport numbanorm as nbn\n{SETUP}\nt0 = time.perf_counter()\n"
            f"{call}\nprint(time.perf_counter() - t0)\n")


IMPORT = ("import time, sys\nt0 = time.perf_counter()\nimport numba\nt1 = time.perf_counter()\n"
          "import numbanorm\nprint(time.perf_counter() - t1)\n")


def _seconds(program, env):
    out = subprocess.run([sys.executable, "-c", program], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[-1])


# the floor: a one-line cached function in a module of its own (Numba caches only functions
# defined in files); ONE_LINE is written to a temporary directory put on the child's path
ONE_LINE = "from numba import njit\n\n\n@njit(cache=True)\ndef one(a):\n    return a + 1.0\n"
FLOOR = ("import time\nimport numba_one_line\nt0 = time.perf_counter()\nnumba_one_line.one(1.0)\n"
         "print(time.perf_counter() - t0)\n")


def cases():
    out = [("Numba alone: @njit one-liner", FLOOR, "floor")]
    out += [(name, _program(call, "op"), "forward") for name, call in FORWARD.items()]
    out += [(name, _program(call, "op"), "pair") for name, call in PAIRS.items()]
    readme = "\n".join(line for line in _readme_blocks().splitlines()
                       if not line.startswith(("import numpy", "import numbanorm")))
    out.append(("README quick start", _program(readme, "readme"), "readme"))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", action="append", help="only this case (repeatable)")
    p.add_argument("--repeats", type=int, default=1, help="cold and warm runs per case")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = []
    for name, program, kind in cases():
        if args.case and name not in args.case:
            continue
        cold, warm = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NUMBA_CACHE_DIR=cache)
                if kind == "floor":
                    with open(os.path.join(cache, "numba_one_line.py"), "w") as f:
                        f.write(ONE_LINE)
                    env["PYTHONPATH"] = os.pathsep.join(
                        [cache] + [p for p in [os.environ.get("PYTHONPATH")] if p])
                cold.append(_seconds(program, env))
                warm.append(_seconds(program, env))
        rows.append((name, kind, cold, warm))
        if not args.json:
            print(f"{name:28s} {kind:8s} cold {statistics.median(cold):6.2f} s "
                  f"(range {min(cold):.2f}-{max(cold):.2f})   "
                  f"warm {statistics.median(warm):6.3f} s "
                  f"(range {min(warm):.3f}-{max(warm):.3f})", flush=True)
    imports = [_seconds(IMPORT, dict(os.environ)) for _ in range(max(5, args.repeats))]
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"cases": rows, "import_after_numba": imports, "load": load}))
    else:
        print(f"import numbanorm after import numba: median {statistics.median(imports):.3f} s "
              f"(range {min(imports):.3f}-{max(imports):.3f}); load average {load:.2f}")


if __name__ == "__main__":
    main()
