"""Command line: `numbanorm bench ...`, `numbanorm warmup ...` and `numbanorm info` (also
`python -m numbanorm`)."""
import argparse
import sys


def _shape(text):
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 32,64,56,56, got {text!r}")
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape needs at least 2 positive sizes, got {text!r}")
    return shape


def info():
    from ._device import info as facts
    lines = [f"{key}: {value}" for key, value in facts().items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="numbanorm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time every op against NumPy and PyTorch")
    from .bench import DTYPES, OPS, STANDARD, TINY, half_cases
    from .bench_cuda import DATA as GPU_DATA
    b.add_argument("--op", action="append", choices=list(OPS) + list(GPU_DATA),
                   help="only this op (repeatable; " + ", ".join(GPU_DATA) +
                   ": the data functions, --device cuda only)")
    b.add_argument("--shape", type=_shape, action="append",
                   help="run this shape instead of the standard ones, e.g. 32,64,56,56")
    b.add_argument("--dtype", action="append", choices=list(DTYPES),
                   help="only this dtype (with --shape: the dtypes to run, default float32); "
                        "float16 and bfloat16 (ml_dtypes) run the float32 cases in 16 bits")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--threads", type=int, help="Numba and PyTorch threads (default: all)")
    b.add_argument("--repeats", type=int, default=5, help="timed runs per case (median taken)")
    b.add_argument("--min-run", type=float, default=0.05,
                   help="seconds each timed run lasts at least (calls are looped)")
    b.add_argument("--tiny", action="store_true", help="the tiny, overhead-bound cases")
    b.add_argument("--no-torch", action="store_true")
    b.add_argument("--no-numpy", action="store_true")
    b.add_argument("--out", action="store_true",
                   help="numbanorm writes into preallocated arrays, out= forward and dx_out= "
                        "backward (NumPy and PyTorch still allocate theirs): the kernels' own "
                        "bandwidth, without the operating system's page zeroing of fresh "
                        "outputs")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.add_argument("--suite", default="layers", choices=["layers", "data", "sparse"],
                   help="layers: the deep-learning ops (default); data: zscore, minmax_scale, "
                        "normalize and a streaming StandardScaler against NumPy, scipy, "
                        "scikit-learn, numbagg and PyTorch (with --function and --dtype); "
                        "sparse: normalize, StandardScaler(with_mean=False), MaxAbsScaler and "
                        "a stream on scipy.sparse CSR against scikit-learn and scipy (with "
                        "--function, --dtype, and --tiny for a small smoke case)")
    b.add_argument("--function", action="append",
                   choices=["zscore", "minmax_scale", "normalize", "stream", "standard",
                            "maxabs"],
                   help="--suite data or sparse: only this function (repeatable; standard "
                        "and maxabs: sparse only)")
    sub.add_parser("info", help="what numbanorm detected: versions, threads, devices")
    from .warmup import DEFAULT_DTYPES, DTYPES as WARM_DTYPES, OPS as WARM_OPS
    wu = sub.add_parser("warmup", help="compile the CPU kernels into Numba's on-disk cache "
                                       "ahead of time (for container images and CI)")
    wu.add_argument("--ops", nargs="+", choices=WARM_OPS, metavar="OP",
                    help="only these (default: all): " + ", ".join(WARM_OPS))
    wu.add_argument("--dtypes", nargs="+", choices=WARM_DTYPES, metavar="DTYPE",
                    help="default: " + " ".join(DEFAULT_DTYPES) + "; also " +
                         " ".join(d for d in WARM_DTYPES if d not in DEFAULT_DTYPES))
    wu.add_argument("--jobs", type=int, default=1,
                    help="processes compiling at once (groups of ops that share kernels "
                         "each go to one; default 1)")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
        return 0
    if args.command == "warmup":
        from ._cache import location
        from .warmup import warmup
        if args.jobs < 1:
            parser.error("--jobs must be positive")
        print(f"Numba cache: {location()}")
        warmup(args.ops, args.dtypes, jobs=args.jobs)
        return 0
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--repeats and --threads must be positive")
    if args.suite == "sparse":
        import importlib.util
        if importlib.util.find_spec("scipy") is None:
            parser.error("--suite sparse needs scipy (pip install scipy)")
        from .bench_sparse import SMALL, cases as sparse_cases, run as run_sparse
        cases = [c for c in sparse_cases(SMALL) if args.tiny] or sparse_cases()
        cases = [c for c in cases if (not args.function or c[0] in args.function)
                 and (not args.dtype or c[3] in args.dtype)]
        print(run_sparse(cases, repeats=args.repeats, min_run=args.min_run,
                         threads=args.threads, as_json=args.json))
        return 0
    if args.suite == "data":
        from .bench_data import CASES, run as run_data
        cases = [c for c in CASES + half_cases(CASES, args.dtype or (), at=3)
                 if (not args.function or c[0] in args.function)
                 and (not args.dtype or c[3] in args.dtype)]
        print(run_data(cases, repeats=args.repeats, min_run=args.min_run, threads=args.threads,
                       as_json=args.json, preallocated=args.out))
        return 0
    if args.device != "cuda" and set(args.op or ()) & set(GPU_DATA):
        parser.error(f"--op {', '.join(GPU_DATA)} time the GPU's data functions: use "
                     "--device cuda (on the CPU: --suite data)")
    if args.device == "cuda":
        from .bench_cuda import STANDARD as GPU_CASES, run as run_gpu
        cases = ([(op, s, d) for op in (args.op or list(OPS)) for s in args.shape
                  for d in (args.dtype or ["float32"])] if args.shape
                 else [c for c in GPU_CASES if (not args.op or c[0] in args.op)
                       and (not args.dtype or c[2] in args.dtype)])
        print(run_gpu(cases, repeats=args.repeats, min_run=args.min_run,
                      with_torch=not args.no_torch, as_json=args.json))
        return 0
    if args.shape:
        ops = args.op or list(OPS)
        cases = [(op, s, d) for op in ops for s in args.shape for d in (args.dtype or ["float32"])]
        bad = [(op, s) for op, s, _ in cases if op in ("instance_norm", "batch_instance_norm",
                                                         "local_response_norm",
                                                         "instance_norm_nhwc") and len(s) < 3]
        if bad:
            parser.error(f"{bad[0][0]} needs (N, C, *spatial) shapes, got {bad[0][1]}")
    else:
        base = TINY if args.tiny else STANDARD
        cases = [c for c in base + half_cases(base, args.dtype or ())
                 if (not args.op or c[0] in args.op) and (not args.dtype or c[2] in args.dtype)]
    from .bench import run
    print(run(cases, repeats=args.repeats, min_run=args.min_run, threads=args.threads,
              with_torch=not args.no_torch, with_numpy=not args.no_numpy, as_json=args.json,
              preallocated=args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
