"""Channels-last images and the fused residual add + norm, timed against numbanorm's own
channels-first / add-then-norm paths and PyTorch CPU in one run: medians of repeats, ratios
(>1: numbanorm's new path faster).

With --cold MB the channels-last table reads one of several copies of its inputs in turn (x,
dy and the forward's record of each made beforehand, the copies of a shape MB megabytes
together), so that every call reads its input from memory, as a layer in a network whose
activations outgrow the caches does; without it, every call reads the same arrays, which a
large last-level cache then holds between calls. Outputs are one array per shape either way,
reused (out=, dx_out=), as an allocator hands the memory just freed to the next call, which is
what PyTorch's outputs get. Each median then covers repeats x copies calls.

Usage: python scripts/layouts_bench.py [--repeats 15] [--cold MB] [--no-torch] [--no-fused]"""
import argparse
import os
import time

import numpy as np

import numbanorm as nbn


def _median(f, repeats, copies=1):
    """Median ms of f(i), i cycling through range(copies) (f(0) first, untimed)."""
    f(0)
    ts = []
    for r in range(repeats * copies):
        t0 = time.perf_counter()
        f((r + 1) % copies)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def channels_last(repeats, torch, cold_mb=0):
    rng = np.random.default_rng(0)
    how = f", each call on one of the copies of {cold_mb} MB (--cold)" if cold_mb else ""
    print(f"channels-last (N, H, W, C) float32: ms, medians{how}; ratios of the others' time "
          "to ours")
    print(f"{'op':<14}{'shape':<18}{'pass':<5}{'CL':>8}{'NCHW':>8}{'view*':>8}{'torch':>8}"
          f"{'NCHW/CL':>9}{'view/CL':>9}{'torch/CL':>9}")
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
            t = {"CL": _median(lambda i: fwd(xs[i], channel_axis=-1, out=y), repeats,
                               copies),
                 "NCHW": _median(lambda i: fwd(xcs[i], out=yc), repeats, copies)}
            # *the path before channels-last kernels: the transposed view copied first
            t["view"] = _median(lambda i: fwd(np.ascontiguousarray(xs[i].transpose(0, 3, 1, 2)),
                                              out=yc), repeats, copies)
            tb = {"CL": _median(lambda i: bwd(dys[i], s_cl[i], dx_out=y), repeats, copies),
                  "NCHW": _median(lambda i: bwd(dycs[i], s_c[i], dx_out=yc), repeats,
                                  copies),
                  "view": _median(lambda i: bwd(np.ascontiguousarray(
                      dys[i].transpose(0, 3, 1, 2)), s_c[i], dx_out=yc), repeats, copies)}
            if torch is not None:
                F = torch.nn.functional
                txs = [torch.from_numpy(x).permute(0, 3, 1, 2) for x in xs]
                tw, tbias = torch.from_numpy(w), torch.from_numpy(b)
                tf = {"batch_norm": lambda a: F.batch_norm(a, None, None, tw, tbias, True),
                      "group_norm": lambda a: F.group_norm(a, 32, tw, tbias),
                      "instance_norm": lambda a: F.instance_norm(a, weight=tw, bias=tbias)}[name]
                t["torch"] = _median(lambda i: tf(txs[i]), repeats, copies)
                txgs = [tx.detach().clone(memory_format=torch.channels_last).requires_grad_()
                        for tx in txs]
                tdys = [torch.from_numpy(dy).permute(0, 3, 1, 2) for dy in dys]

                def step(i):
                    txgs[i].grad = None
                    tf(txgs[i]).backward(tdys[i])
                tb["torch"] = max(0.0, _median(step, repeats, copies) - t["torch"])
            for label, tt in (("fwd", t), ("bwd", tb)):
                tor = tt.get("torch", float("nan"))
                print(f"{name:<14}{str(shape):<18}{label:<5}{tt['CL']:8.3f}{tt['NCHW']:8.3f}"
                      f"{tt['view']:8.3f}{tor:8.3f}{tt['NCHW'] / tt['CL']:9.2f}"
                      f"{tt['view'] / tt['CL']:9.2f}{tor / tt['CL']:9.2f}")


def fused(repeats, torch):
    rng = np.random.default_rng(0)
    print("\nfused residual add + norm, float32: ms, medians (fresh outputs each call; "
          "'out=' rows reuse y and h, 'dx_out=' rows dx)")
    print(f"{'op':<16}{'shape':<16}{'pass':<6}{'fused':>8}{'np+nn':>8}{'torch':>8}"
          f"{'np+nn/f':>9}{'torch/f':>9}{'GB/s':>7}")
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
            tt = {"f": _median(fwd, repeats), "ref": _median(ref, repeats),
                  "fo": _median(lambda: fwd(out=y, residual_out=h), repeats),
                  "refo": _median(lambda: nbn.layer_norm(np.add(x, r, out=h), L, w, b, out=y)
                                  if centered else nbn.rms_norm(np.add(x, r, out=h), L, w, out=y),
                                  repeats),
                  "bf": _median(bwd, repeats), "bref": _median(bref, repeats),
                  "bfo": _median(lambda: bwd(dx_out=dxo), repeats),
                  "brefo": _median(brefo, repeats)}
            tor = tob = float("nan")
            if torch is not None:
                F = torch.nn.functional
                tx, tr = torch.from_numpy(x), torch.from_numpy(r)
                tw, tbias = torch.from_numpy(w), torch.from_numpy(b)
                norm = ((lambda a: F.layer_norm(a, (L,), tw, tbias)) if centered
                        else (lambda a: F.rms_norm(a, (L,), tw)))
                tor = _median(lambda: norm(torch.add(tx, tr)), repeats)
                txg, trg = tx.clone().requires_grad_(), tr.clone().requires_grad_()
                tdy, tdh = torch.from_numpy(dy), torch.from_numpy(dh)

                def step():
                    txg.grad = trg.grad = None
                    hh = txg + trg
                    torch.autograd.backward([norm(hh), hh], [tdy, tdh])
                tob = max(0.0, _median(step, repeats) - tor)
            gbs = 4 * x.nbytes / tt["fo"] / 1e6
            rows = (("fwd", tt["f"], tt["ref"], tor), ("fwd out=", tt["fo"], tt["refo"], tor),
                    ("bwd", tt["bf"], tt["bref"], tob),
                    ("bwd dx_out=", tt["bfo"], tt["brefo"], tob))
            for label, ours, mine, theirs in rows:
                print(f"{name:<16}{str(shape):<16}{label:<12}{ours:8.2f}{mine:8.2f}{theirs:8.2f}"
                      f"{mine / ours:9.2f}{theirs / ours:9.2f}"
                      f"{gbs if label == 'fwd out=' else float('nan'):7.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=15)
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
