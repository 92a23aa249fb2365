"""Re-derive the quality gate's blur thresholds on the kiosk generator's deliberately bad frames.

    .venv/bin/python -m benchmarks.calibrate_quality [--frames 2000] [--seed 7]

Prints, for the area view alone and for the two-stage gate (fast measure on the model's own
resized crop, area view only in between), the share of good frames kept, the blur recall and how
often the area view is needed. The shipped defaults (min_sharpness 70, fast band 5..25) come from
this table at seed 7; ``make bench`` checks them on another seed.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.__main__ import REF, kiosk_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    from shoplens.contract import PreprocessContract
    from shoplens.preprocess import Preprocessor
    from shoplens.quality import _gray, area_view, laplacian_variance, noise_compensated_energy

    frames, _, reasons = kiosk_frames(a.frames, seed=a.seed, bad_fraction=0.5)
    pre = Preprocessor(PreprocessContract.load(REF / "contract.json"))
    area, fast = [], []
    for f in frames:
        view = pre.process(f, np.empty(pre.out_shape, pre.out_dtype))
        area.append(laplacian_variance(_gray(area_view(view.crop))))
        fast.append(noise_compensated_energy(_gray(view.resized)))  # the model's 96x96 view
    why = np.array([r or "" for r in reasons])
    area_a, fast_a = np.array(area), np.array(fast)
    good, blur = why == "", why == "blur"
    print(f"{a.frames} frames, seed {a.seed}: {good.sum()} good, {blur.sum()} blurred")
    for th in (50, 70, 90):
        print(f"area view alone, min_sharpness {th}: good kept {np.mean(area_a[good] >= th):.3f}, "
              f"blur recall {np.mean(area_a[blur] < th):.3f}")  # fmt: skip
    print("two-stage gate (min_sharpness 70):")
    for lo in (0, 5):
        for hi in (20, 25, 30, 40):
            sharp = np.where(fast_a < lo, False, np.where(fast_a >= hi, True, area_a >= 70))
            needed = ((fast_a >= lo) & (fast_a < hi))[good].mean()
            print(f"  band {lo:>2}..{hi:<3} good kept {sharp[good].mean():.3f}, blur recall "
                  f"{(~sharp[blur]).mean():.3f}, area view on {needed:.1%} of good frames")  # fmt: skip


if __name__ == "__main__":
    main()
