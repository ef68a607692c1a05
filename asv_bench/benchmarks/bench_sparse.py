"""asv benchmarks of the sparse data family: the cases of `numbanorm bench --suite sparse`
(numbanorm.bench_sparse.CASES: normalize, StandardScaler(with_mean=False).fit_transform,
MaxAbsScaler.fit_transform and a 100-chunk partial_fit stream on scipy.sparse CSR), numbanorm's
side only.

    cd asv_bench && asv run --python=same --bench Sparse
"""
from numbanorm import bench_sparse

CASES = {f"{fn}-{'x'.join(map(str, shape))}-{density:g}-{dtype}": (fn, shape, density, dtype)
         for fn, shape, density, dtype in bench_sparse.CASES}


class SparseData:
    params = [sorted(CASES)]
    param_names = ["case"]
    timeout = 300

    def setup(self, case):
        try:
            import scipy.sparse  # noqa: F401
        except ImportError as exc:
            raise NotImplementedError("scipy is not installed") from exc
        fn, shape, density, dtype = CASES[case]
        self.call = bench_sparse._ours(fn, bench_sparse._matrix(shape, density, dtype))
        self.call()  # JIT compile or cache load, outside the timing

    def time_sparse(self, case):
        self.call()

    def peakmem_sparse(self, case):
        self.call()
