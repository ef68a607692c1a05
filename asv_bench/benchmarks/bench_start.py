"""asv benchmarks of time to first result (issue 29), each sample in a fresh process (asv's
timeraw_): `import numbanorm` after `import numba`, and one op's first forward + backward with
an empty kernel cache (every kernel it needs compiles) and with a filled one (loaded from
it). Compile times belong in the history: a kernel change that doubles them shows here.
`scripts/first_call.py` times every op the same way.

    cd asv_bench && asv run --python=same --bench Start
"""
import subprocess
import sys
import tempfile

_ARGS = {"layer_norm": "(32, 32)", "batch_norm": "None, None, training=True",
         "group_norm": "8"}


def _setup(cache):
    """Everything before the clock: the cache directory (chosen before numba is imported; a
    new empty one in each sample's process when cache is None), the imports and the data."""
    where = repr(cache) if cache else "__import__('tempfile').mkdtemp(prefix='numbanorm-asv-')"
    return (f"import os\nos.environ['NUMBA_CACHE_DIR'] = {where}\nimport numpy as np\n"
            "import numbanorm as nbn\n"
            "x = np.random.default_rng(0).standard_normal((16, 64, 32, 32)).astype(np.float32)\n")


def _call(op):
    return (f"y, saved = nbn.{op}_forward(x, {_ARGS[op]})\n"
            f"nbn.{op}_backward(np.ones_like(y), saved)\n")


class Start:
    params = [sorted(_ARGS)]
    param_names = ["op"]
    number = 1
    repeat = 3
    timeout = 600

    def setup(self, op):
        self.warm = tempfile.mkdtemp(prefix="numbanorm-asv-warm-")
        subprocess.run([sys.executable, "-c", _setup(self.warm) + _call(op)], check=True)

    def timeraw_cold_forward_backward(self, op):
        return _call(op), _setup(None)

    def timeraw_warm_forward_backward(self, op):
        return _call(op), _setup(self.warm)


def timeraw_import_numbanorm():
    return "import numbanorm", "import numba"
