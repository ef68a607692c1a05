"""Are this checkout's results bitwise identical to another commit's? For refactors that must not
change a bit.

Make the other commit importable under another name, as for scripts/ab.py:

    git archive <commit> numbanorm | tar -x -C /tmp/old && mv /tmp/old/numbanorm /tmp/old/nbold
    python scripts/same_bits.py /tmp/old

Every op, forward (plain, *_forward with out=) and backward (allocating and dx_out=), with and
without weight/bias, float32 and float64, on the standard bench shapes and on awkward small
ones (primes, ones, empty batches, NaN and huge values, non-contiguous input), in training and
eval modes, with running buffers: y, the saved mean and rstd, dx, dweight, dbias and the
running buffers are compared bit for bit (NaN equal to NaN). Prints each difference and a
count; exits 1 when any.

Run it twice and read the second run: Numba's parallel kernels compiled in the running process
and the same kernels loaded from its on-disk cache can round differently in the last bits (see
the README), and the first run compiles the other commit's kernels while this checkout's come
from the cache; in the second both load from their caches.
"""
import importlib
import sys

import numpy as np

import numbanorm as new
from numbanorm.bench import STANDARD, WIDE, num_groups

SMALL = [(1, 8), (7, 13), (3, 4, 5), (2, 6, 3, 5), (5, 3, 2, 3), (13, 7), (0, 4, 5),
         (16, 5, 9, 8), (300, 40), (9, 4, 7), (4, 6, 32), (64, 128), (2, 37), (1, 1, 17),
         (8, 6, 40), (3, 2, 70), (64, 1024), (4, 65536), (16, 256), (32, 8, 3, 3),
         (2, 8192, 4, 4), (512, 256, 4, 4)]


def _cases(shape):
    """(name, forward(nb, x, w, b, rm, rv, out), backward(nb), param size) for a shape."""
    C = shape[1] if len(shape) > 1 else 1
    L = shape[-1]
    cases = [("layer_norm", lambda nb, x, w, b, rm, rv, out: nb.layer_norm_forward(
                  x, L, w, b, out=out), lambda nb: nb.layer_norm_backward, L),
             ("rms_norm", lambda nb, x, w, b, rm, rv, out: nb.rms_norm_forward(
                 x, L, w, out=out), lambda nb: nb.rms_norm_backward, L)]
    if len(shape) >= 2:
        cases += [
            ("batch_norm_train", lambda nb, x, w, b, rm, rv, out: nb.batch_norm_forward(
                x, rm, rv, w, b, True, 0.1, out=out), lambda nb: nb.batch_norm_backward, C),
            ("batch_norm_eval", lambda nb, x, w, b, rm, rv, out: nb.batch_norm_forward(
                x, rm, rv, w, b, False, out=out), lambda nb: nb.batch_norm_backward, C),
            ("group_norm", lambda nb, x, w, b, rm, rv, out: nb.group_norm_forward(
                x, num_groups(C), w, b, out=out), lambda nb: nb.group_norm_backward, C)]
        if len(shape) >= 2 and np.prod(shape[2:], dtype=int) > 1:
            cases += [
                ("instance_norm", lambda nb, x, w, b, rm, rv, out: nb.instance_norm_forward(
                    x, rm, rv, w, b, True, 0.1, out=out), lambda nb: nb.instance_norm_backward,
                 C),
                ("instance_norm_eval", lambda nb, x, w, b, rm, rv, out: nb.instance_norm_forward(
                    x, rm, rv, w, b, False, out=out), lambda nb: nb.instance_norm_backward, C)]
    return cases


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.array_equal(a.view(np.uint8), b.view(np.uint8)))


def _run(nb, fwd, bwd, x, dy, w, b, rm, rv):
    rm = None if rm is None else rm.copy()
    rv = None if rv is None else rv.copy()
    out = np.empty_like(x)
    y, saved = fwd(nb, x, w, b, rm, rv, out)
    grads = list(bwd(nb)(dy, saved))
    dx_out = np.empty_like(dy)
    grads_out = list(bwd(nb)(dy, saved, dx_out=dx_out))
    return dict(y=y.copy(), mean=saved.mean, rstd=saved.rstd, grads=grads,
                grads_out=grads_out, rm=rm, rv=rv)


def main():
    sys.path.insert(0, sys.argv[1])
    old = importlib.import_module("nbold")
    rng = np.random.default_rng(0)
    shapes = [(s, np.dtype(d)) for _, s, d in STANDARD + WIDE]
    shapes += [(s, np.dtype(d)) for s in SMALL for d in ("float32", "float64")]
    diffs = compared = 0
    for shape, dt in dict.fromkeys(shapes):
        for kind in ("plain", "nan_huge", "fortran"):
            x = (rng.standard_normal(shape) * 2 + 0.5).astype(dt)
            if kind == "nan_huge" and x.size > 8:
                flat = x.reshape(-1)
                flat[3] = np.nan
                flat[-2] = np.finfo(dt).max / 4
            if kind == "fortran":
                if x.ndim < 2 or x.size > 1 << 22:
                    continue
                x = np.asfortranarray(x)
            dy = rng.standard_normal(shape).astype(dt)
            for name, fwd, bwd, P in _cases(shape):
                for affine in (False, True):
                    w = (1 + 0.1 * rng.standard_normal(P)).astype(dt) if affine else None
                    b = (0.1 * rng.standard_normal(P)).astype(dt) if affine else None
                    rm = (0.1 * rng.standard_normal(P)).astype(dt)
                    rv = (1 + rng.random(P)).astype(dt)
                    try:
                        r_old = _run(old, fwd, bwd, x, dy, w, b, rm, rv)
                    except (ValueError, TypeError) as e:
                        try:
                            _run(new, fwd, bwd, x, dy, w, b, rm, rv)
                        except type(e) as e2:
                            if str(e2) != str(e):
                                print("different error", name, shape, dt, e, e2)
                                diffs += 1
                            continue
                        print("new accepts what old refused", name, shape, dt, e)
                        diffs += 1
                        continue
                    r_new = _run(new, fwd, bwd, x, dy, w, b, rm, rv)
                    for key in ("y", "mean", "rstd", "rm", "rv"):
                        compared += 1
                        if not _same(r_old[key], r_new[key]):
                            diffs += 1
                            print("DIFF", key, name, shape, dt.name, kind, affine)
                    for key in ("grads", "grads_out"):
                        for i, (g0, g1) in enumerate(zip(r_old[key], r_new[key])):
                            compared += 1
                            if not _same(g0, g1):
                                diffs += 1
                                print("DIFF", key, i, name, shape, dt.name, kind, affine)
    print(f"{compared} arrays compared, {diffs} differences")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
