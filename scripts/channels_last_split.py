"""Few large channels-last images: group_norm with each image cut into chunks of rows (the
split_* kernels of numbanorm.cpu.channels_last) against one work item per image, in one process
(CHANNELS_LAST_SPLIT_ITEMS set to 1 turns the split off), interleaved, medians; and against
our NCHW kernels on the same values.

    python scripts/channels_last_split.py [--rounds 5] [--calls 25]
"""
import argparse
import os
import time

import numpy as np

import numbanorm as nbn
import numbanorm.cpu._host as host

SHAPES = [(1, 64, 64, 320), (1, 128, 128, 128), (1, 28, 28, 256), (2, 32, 32, 640),
          (3, 56, 56, 64), (32, 56, 56, 64), (8, 28, 28, 256)]


def _ms(fn, calls):
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=25)
    args = p.parse_args()
    items = host.CHANNELS_LAST_SPLIT_ITEMS
    rng = np.random.default_rng(0)
    print("group_norm, 32 groups (8 for C < 32), float32, out= and dx_out=, ms medians; "
          "ratio = unsplit / split time (> 1: the split is faster), median and range of rounds")
    for shape in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        G = 32 if shape[-1] >= 32 else 8
        y, dy, dx = np.empty_like(x), np.ones_like(x), np.empty_like(x)
        xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        yc, dyc, dxc = np.empty_like(xc), np.ones_like(xc), np.empty_like(xc)
        K = host._image_chunks(shape[0], shape[1] * shape[2], x.size)
        got = {1: [], items: []}
        for r in range(args.rounds):
            for setting in ((1, items) if r % 2 == 0 else (items, 1)):
                host.CHANNELS_LAST_SPLIT_ITEMS = setting
                _, saved = nbn.group_norm_forward(x, G, channel_axis=-1)
                got[setting].append((
                    _ms(lambda: nbn.group_norm(x, G, channel_axis=-1, out=y), args.calls),
                    _ms(lambda: nbn.group_norm_backward(dy, saved, dx_out=dx), args.calls)))
        host.CHANNELS_LAST_SPLIT_ITEMS = items
        _, saved_c = nbn.group_norm_forward(xc, G)
        nchw = (_ms(lambda: nbn.group_norm(xc, G, out=yc), args.calls),
                _ms(lambda: nbn.group_norm_backward(dyc, saved_c, dx_out=dxc), args.calls))
        a, b = np.array(got[1]), np.array(got[items])
        cells = []
        for i, name in enumerate(("fwd", "bwd")):
            ratio = a[:, i] / b[:, i]
            cells.append(f"{name} {np.median(a[:, i]):.3f} -> {np.median(b[:, i]):.3f} "
                         f"({np.median(ratio):.2f}x, {ratio.min():.2f}-{ratio.max():.2f}; "
                         f"NCHW/split {nchw[i] / np.median(b[:, i]):.2f})")
        print(f"{str(shape):20s} K={K}  " + "   ".join(cells), flush=True)
    print(f"threads {nbn.info()['threads']}, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
