"""asv benchmarks of the data-normalization functions: the cases of `numbanorm bench --suite
data` (numbanorm.bench_data.CASES), numbanorm's side only, with out= (the three-pass floor is
what they are measured against), and the streaming StandardScaler; the float32 cases again
in float16 and bfloat16 (ml_dtypes, when installed).

    cd asv_bench && asv run --python=same --bench Data
"""
import numpy as np

from numbanorm import bench, bench_data

CASES = {f"{fn}-{'x'.join(map(str, shape))}-{dtype}{'-nan' if nan else ''}":
         (fn, shape, axis, dtype, nan) for fn, shape, axis, dtype, nan in
         bench_data.CASES + bench.half_cases(bench_data.CASES, bench.HALF, at=3)}


class DataNormalization:
    params = [sorted(CASES)]
    param_names = ["case"]
    timeout = 300

    def setup(self, case):
        fn, shape, axis, dtype, nan = CASES[case]
        try:
            dtype = bench.np_dtype(dtype)
        except SystemExit as exc:  # bfloat16 without ml_dtypes
            raise NotImplementedError(str(exc)) from exc
        rng = np.random.default_rng(0)
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        if nan:
            x.reshape(-1)[rng.choice(x.size, x.size // 100, replace=False)] = np.nan
        if fn == "stream":
            self.call = bench_data._stream(x)[0]
        else:
            self.call = bench_data._ours(fn, x, axis, nan, np.empty_like(x))
        self.call()  # JIT compile or cache load, outside the timing

    def time_data(self, case):
        self.call()

    def peakmem_data(self, case):
        self.call()
