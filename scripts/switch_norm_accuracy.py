"""switch_norm's statistics on data far from 0, float32 input, each against the float64 oracle
of its own definition (tests/oracle.py): numbanorm's exact default against the exact oracle
(two-pass biased variances); numbanorm's reference=True and the reference module's forward on
PyTorch 2.13 (switchablenorms' SwitchNorm2d, transcribed as numbanorm.bench runs it) against
the reference's formulas in float64. Mixing logits favour LN and BN, whose reference
statistics are mean(var_in + mean_in^2) - mean^2. Largest absolute error of y.

    python scripts/switch_norm_accuracy.py
"""
import os
import sys

import numpy as np

import numbanorm as nbn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import oracle  # noqa: E402


def torch_reference(x, mw, vw):
    import torch
    from numbanorm.bench import _torch_reference
    xt = torch.from_numpy(x)
    return _torch_reference("switch_norm", torch, xt, None, None, mw, vw)().numpy()


def main():
    rng = np.random.default_rng(0)
    mw = np.array([-1.0, 1.0, 1.0])
    vw = mw.copy()
    print(f"{'data (float32)':<22}{'numbanorm':>12}{'reference=True':>16}{'PyTorch ref':>14}")
    for mean, std in ((0.0, 1.0), (100.0, 1.0), (1e4, 1.0), (1e4, 100.0)):
        x = (rng.standard_normal((8, 16, 14, 14)) * std + mean).astype(np.float32)
        exact = oracle.switch_norm(x, mw, vw, training=True)["y"]
        ref = oracle.switch_norm(x, mw, vw, training=True, reference=True)["y"]
        pairs = [(nbn.switch_norm(x, mw, vw, training=True), exact),
                 (nbn.switch_norm(x, mw, vw, training=True, reference=True), ref)]
        try:
            pairs.append((torch_reference(x, mw, vw), ref))
        except ImportError:
            pass
        cells = "".join(f"{np.nanmax(np.abs(y.astype(np.float64) - want)):>{w}.1e}"
                        for (y, want), w in zip(pairs, (12, 16, 14)))
        print(f"{f'mean {mean:g}, std {std:g}':<22}{cells}")


if __name__ == "__main__":
    main()
