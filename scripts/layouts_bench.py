"""Channels-last images and the fused residual add + norm, timed against numbanorm's own
channels-first / add-then-norm paths and PyTorch CPU in one run: medians of repeats, ratios
(>1: numbanorm's new path faster).

The sides are interleaved: each round times a block of BLOCK consecutive calls of every side
(after WARMUP_S seconds of untimed calls), in a shuffled order, and a ratio is the median of the
per-round ratios, with its interquartile range in brackets (see _rounds for why).

With --cold MB the channels-last table reads one of several copies of its inputs in turn (x,
dy and the forward's record of each made beforehand, the copies of a shape MB megabytes
together), so that every call reads its input from memory, as a layer in a network whose
activations outgrow the caches does; without it, every call reads the same arrays, which a
large last-level cache then holds between calls. Outputs are one array per shape either way,
reused (out=, dx_out=), as an allocator hands the memory just freed to the next call, which is
what PyTorch's outputs get. Each copy is then timed `repeats` times on each side.

Usage: python scripts/layouts_bench.py [--repeats 9] [--cold MB] [--no-torch] [--no-fused]"""
import argparse
import os
import time

import numpy as np

import numbanorm as nbn

BLOCK = 5  # timed consecutive calls of one side per round (see _rounds)
WARMUP_S = 0.01  # untimed calls of a side before its block


def _rounds(fs, repeats, copies=1, block=BLOCK):
    """Per-round ms of each f(i) in the dict fs, interleaved: every round runs each side in
    turn, in an order shuffled per round (a seeded generator): untimed calls for WARMUP_S
    seconds (at least one), then a block of `block` timed calls whose median is that side's
    time in the round. Rounds: repeats, times ceil(copies/block) with copies, so that each
    copy is timed `repeats` times. The t-th timed call of the k-th side of fs reads copy
    (t + 1 + k*copies//len(fs)) % copies, so that no side reads a copy another side has just
    brought into the caches; the untimed calls read the side's last copy again.

    Why so: timed one side after another, this shared machine's speed drifted between runs
    (PyTorch's channels-last group_norm forward took 1.77 ms in one such run and 2.79 in the
    next). Interleaved single calls were slowed by the side before: after it, or after any
    pause, a side's first calls run slow and settle over about 10 ms (add_layer_norm
    (4096, 768) with out=: 2.7, 2.4, 1.8, 1.4, then 1.2 ms; after a 0.5 s sleep 4.8, 2.9,
    2.1, 1.5, 1.4, 1.2), and a side that writes fresh outputs (64 MB of new pages) slowed the
    next side's call by up to 1.6x."""
    for f in fs.values():
        f(0)
    ts = {k: [] for k in fs}
    step = copies // len(fs)
    order = np.random.default_rng(1)
    sides = list(fs.items())
    calls = 0
    for r in range(repeats * -(-copies // block)):
        for k in order.permutation(len(sides)):
            name, f = sides[k]
            last = (calls + k * step) % copies
            t_end = time.perf_counter() + WARMUP_S
            f(last)
            while time.perf_counter() < t_end:
                f(last)
            block_ts = []
            for t in range(calls, calls + block):
                i = (t + 1 + k * step) % copies
                t0 = time.perf_counter()
                f(i)
                block_ts.append((time.perf_counter() - t0) * 1e3)
            ts[name].append(float(np.median(block_ts)))
        calls += block
    return {k: np.array(v) for k, v in ts.items()}


def _ms(t):
    return float(np.median(t))


def _ratio(num, den, width=20):
    """Median (interquartile range) of the per-round ratios num/den, right-aligned."""
    q = num / den
    lo, mid, hi = np.percentile(q, [25, 50, 75])
    text = "nan" if np.isnan(mid) else f"{mid:.2f} ({lo:.2f}-{hi:.2f})"
    return f"{text:>{width}}"


def channels_last(repeats, torch, cold_mb=0):
    rng = np.random.default_rng(0)
    how = f", each call on one of the copies of {cold_mb} MB (--cold)" if cold_mb else ""
    print(f"channels-last (N, H, W, C) float32: ms, medians{how}; ratios of the others' time "
          "to ours")
    print(f"{'op':<14}{'shape':<18}{'pass':<5}{'CL':>8}{'NCHW':>8}{'view*':>8}{'torch':>8}"
          f"{'NCHW/CL':>20}{'view/CL':>20}{'torch/CL':>20}")
    for shape in ((32, 56, 56, 64), (8, 28, 28, 256)):
        N, H, W, C = shape
        x0 = rng.standard_normal(shape).astype(np.float32)
        copies = max(1, -(-cold_mb * 2**20 // (2 * x0.nbytes)))  # x and dy
        xs = [x0 + np.float32(i) for i in range(copies)]   # copy i: x, dy, y and channels-first
        dys = [rng.standard_normal(shape).astype(np.float32) for _ in range(copies)]
        xcs = [np.ascontiguousarray(x.transpose(0, 3, 1, 2)) for x in xs]
        dycs = [np.ascontiguousarray(dy.transpose(0, 3, 1, 2)) for dy in dys]
        y, yc = np.empty_like(x0), np.empty_like(xcs[0])   # outputs: one each, reused
        w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        ops = {
            "batch_norm": (lambda a, **k: nbn.batch_norm_forward(a, None, None, w, b, True, **k),
                           nbn.batch_norm_backward),
            "group_norm": (lambda a, **k: nbn.group_norm_forward(a, 32, w, b, **k),
                           nbn.group_norm_backward),
            "instance_norm": (lambda a, **k: nbn.instance_norm_forward(a, weight=w, bias=b, **k),
                              nbn.instance_norm_backward),
        }
        for name, (fwd, bwd) in ops.items():
            s_cl = [fwd(x, channel_axis=-1)[1] for x in xs]
            s_c = [fwd(xc)[1] for xc in xcs]
            fw = {"CL": lambda i: fwd(xs[i], channel_axis=-1, out=y),
                  "NCHW": lambda i: fwd(xcs[i], out=yc),
                  # *the path before channels-last kernels: the transposed view copied first
                  "view": lambda i: fwd(np.ascontiguousarray(xs[i].transpose(0, 3, 1, 2)),
                                        out=yc)}
            bw = {"CL": lambda i: bwd(dys[i], s_cl[i], dx_out=y),
                  "NCHW": lambda i: bwd(dycs[i], s_c[i], dx_out=yc),
                  "view": lambda i: bwd(np.ascontiguousarray(dys[i].transpose(0, 3, 1, 2)),
                                        s_c[i], dx_out=yc)}
            if torch is not None:
                F = torch.nn.functional
                txs = [torch.from_numpy(x).permute(0, 3, 1, 2) for x in xs]
                tw, tbias = torch.from_numpy(w), torch.from_numpy(b)
                tf = {"batch_norm": lambda a: F.batch_norm(a, None, None, tw, tbias, True),
                      "group_norm": lambda a: F.group_norm(a, 32, tw, tbias),
                      "instance_norm": lambda a: F.instance_norm(a, weight=tw, bias=tbias)}[name]
                fw["torch"] = lambda i: tf(txs[i])
                txgs = [tx.detach().clone(memory_format=torch.channels_last).requires_grad_()
                        for tx in txs]
                tdys = [torch.from_numpy(dy).permute(0, 3, 1, 2) for dy in dys]

                def step(i):
                    txgs[i].grad = None
                    tf(txgs[i]).backward(tdys[i])
                bw["torch fwd+bwd"] = step
                bw["torch fwd"] = fw["torch"]
            t = _rounds(fw, repeats, copies)
            tb = _rounds(bw, repeats, copies)
            if torch is not None:  # PyTorch's backward: its step less its forward, per round
                tb["torch"] = np.maximum(0.0, tb["torch fwd+bwd"] - tb["torch fwd"])
            for label, tt in (("fwd", t), ("bwd", tb)):
                tor = tt.get("torch", np.full(len(tt["CL"]), np.nan))
                print(f"{name:<14}{str(shape):<18}{label:<5}{_ms(tt['CL']):8.3f}"
                      f"{_ms(tt['NCHW']):8.3f}{_ms(tt['view']):8.3f}{_ms(tor):8.3f}"
                      f"{_ratio(tt['NCHW'], tt['CL'])}{_ratio(tt['view'], tt['CL'])}"
                      f"{_ratio(tor, tt['CL'])}")


def fused(repeats, torch):
    rng = np.random.default_rng(0)
    print("\nfused residual add + norm, float32: ms, medians (fresh outputs each call; "
          "'out=' rows reuse y and h, 'dx_out=' rows dx)")
    print(f"{'op':<16}{'shape':<16}{'pass':<12}{'fused':>8}{'np+nn':>8}{'torch':>8}"
          f"{'np+nn/f':>20}{'torch/f':>20}{'GB/s':>7}")
    for shape in ((8, 512, 4096), (4096, 768)):
        L = shape[-1]
        x = rng.standard_normal(shape).astype(np.float32)
        r = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        dh = rng.standard_normal(shape).astype(np.float32)
        w, b = np.ones(L, np.float32), np.zeros(L, np.float32)
        y, h, dxo = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        for name, centered in (("add_layer_norm", True), ("add_rms_norm", False)):
            if centered:
                fwd = lambda **k: nbn.add_layer_norm(x, r, L, w, b, **k)  # noqa: E731
                ref = lambda: nbn.layer_norm(x + r, L, w, b)  # noqa: E731
                _, _, s = nbn.add_layer_norm_forward(x, r, L, w, b)
                _, s0 = nbn.layer_norm_forward(x + r, L, w, b)
                bwd = lambda **k: nbn.add_layer_norm_backward(dy, s, dh, **k)  # noqa: E731
                bref = lambda: nbn.layer_norm_backward(dy, s0)[0] + dh  # noqa: E731
                brefo = lambda: np.add(nbn.layer_norm_backward(dy, s0, dx_out=dxo)[0], dh,  # noqa
                                       out=dxo)
            else:
                fwd = lambda **k: nbn.add_rms_norm(x, r, L, w, **k)  # noqa: E731
                ref = lambda: nbn.rms_norm(x + r, L, w)  # noqa: E731
                _, _, s = nbn.add_rms_norm_forward(x, r, L, w)
                _, s0 = nbn.rms_norm_forward(x + r, L, w)
                bwd = lambda **k: nbn.add_rms_norm_backward(dy, s, dh, **k)  # noqa: E731
                bref = lambda: nbn.rms_norm_backward(dy, s0)[0] + dh  # noqa: E731
                brefo = lambda: np.add(nbn.rms_norm_backward(dy, s0, dx_out=dxo)[0], dh,  # noqa
                                       out=dxo)
            fw = {"f": lambda i: fwd(), "ref": lambda i: ref(),
                  "fo": lambda i: fwd(out=y, residual_out=h),
                  "refo": ((lambda i: nbn.layer_norm(np.add(x, r, out=h), L, w, b, out=y))
                           if centered else
                           (lambda i: nbn.rms_norm(np.add(x, r, out=h), L, w, out=y)))}
            bw = {"bf": lambda i: bwd(), "bref": lambda i: bref(),
                  "bfo": lambda i: bwd(dx_out=dxo), "brefo": lambda i: brefo()}
            if torch is not None:
                F = torch.nn.functional
                tx, tr = torch.from_numpy(x), torch.from_numpy(r)
                tw, tbias = torch.from_numpy(w), torch.from_numpy(b)
                norm = ((lambda a: F.layer_norm(a, (L,), tw, tbias)) if centered
                        else (lambda a: F.rms_norm(a, (L,), tw)))
                fw["torch"] = lambda i: norm(torch.add(tx, tr))
                txg, trg = tx.clone().requires_grad_(), tr.clone().requires_grad_()
                tdy, tdh = torch.from_numpy(dy), torch.from_numpy(dh)

                def step(i):
                    txg.grad = trg.grad = None
                    hh = txg + trg
                    torch.autograd.backward([norm(hh), hh], [tdy, tdh])
                bw["torch fwd+bwd"] = step
                bw["torch fwd"] = fw["torch"]
            tt = _rounds(fw, repeats)
            tt.update(_rounds(bw, repeats))
            nan = np.full(len(tt["f"]), np.nan)  # a row of rounds without PyTorch
            tor = tt.get("torch", nan)
            tob = (np.maximum(0.0, tt["torch fwd+bwd"] - tt["torch fwd"])
                   if torch is not None else nan)
            gbs = 4 * x.nbytes / _ms(tt["fo"]) / 1e6
            rows = (("fwd", tt["f"], tt["ref"], tor), ("fwd out=", tt["fo"], tt["refo"], tor),
                    ("bwd", tt["bf"], tt["bref"], tob),
                    ("bwd dx_out=", tt["bfo"], tt["brefo"], tob))
            for label, ours, mine, theirs in rows:
                print(f"{name:<16}{str(shape):<16}{label:<12}{_ms(ours):8.2f}{_ms(mine):8.2f}"
                      f"{_ms(theirs):8.2f}{_ratio(mine, ours)}{_ratio(theirs, ours)}"
                      f"{gbs if label == 'fwd out=' else float('nan'):7.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=9, help="rounds (default 9)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--cold", type=int, default=0, metavar="MB",
                   help="channels-last table: each call on one of copies of its data, MB "
                        "megabytes together")
    p.add_argument("--no-fused", action="store_true", help="the channels-last table only")
    a = p.parse_args()
    torch = None
    if not a.no_torch:
        try:
            import torch
            torch.set_num_threads(len(os.sched_getaffinity(0)))
        except ImportError:
            torch = None
    print(f"load average {os.getloadavg()[0]:.2f}, {len(os.sched_getaffinity(0))} cores")
    channels_last(a.repeats, torch, a.cold)
    if not a.no_fused:
        fused(a.repeats, torch)


if __name__ == "__main__":
    main()
