"""Build the multi-task benchmark's two datasets from nilearn's MNI152 template (offline, real MRI).

    python pipelines/build_multitask_data.py [--out runs/multitask-data]

writes
  OUT/Dataset611_MNI152Tissue/   an nnU-Net v2 raw dataset: the template's brain cut along z into
                                 six slabs ("cases", as a lab cuts one brain into cases), each a
                                 3D NIfTI with a three-class label map: 1 grey matter, 2 white
                                 matter, 3 CSF and the rest of the brain;
  OUT/slice_level/{train,val,test}/{inferior,middle,superior}/*.png
                                 a classification folder: axial slices of the same template,
                                 labelled by their anatomical level (which third of the brain's
                                 inferior-superior extent the slice lies in), an ordered grade.

The tissue labels come from nilearn's masks, which overlap (611k voxels are in both the grey- and
the white-matter mask, against 899k grey only and 345k white only): a voxel in one mask only keeps
that mask's class; a voxel in both is white matter where the T1 intensity is above the midpoint of
the two classes' median intensities, grey matter below; a brain voxel in neither mask, or darker
than the midpoint between that rest's median and grey matter's, is CSF-and-rest (class 3, which is
where the ventricles and sulci fall). The thresholds are computed from the template, not chosen.

The classification slices are every axial slice of the brain's extent, each with a mild seeded
jitter (a shift of up to 6 voxels, intensity gamma 0.8-1.25, Gaussian noise) so that no two
images are the same pixels; splits are interleaved blocks of 4 slices (3 blocks train, 1 val, 1
test in every 5), so every level is in every split. Adjacent slices of one brain are alike:
classification scores are optimistic for new subjects, and the benchmark compares a task alone
with the same task beside another, on the same split, which that does not bias.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CASES = 6
LEVELS = ("inferior", "middle", "superior")
BLOCK = 4


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 volume float32, label map uint8 0..3, affine) at 1 mm."""
    from nilearn import datasets as nd

    template = nd.load_mni152_template(resolution=1)
    t1 = np.asarray(template.dataobj, dtype=np.float32)
    gm = np.asarray(nd.load_mni152_gm_mask(resolution=1).dataobj) > 0
    wm = np.asarray(nd.load_mni152_wm_mask(resolution=1).dataobj) > 0
    brain = (np.asarray(nd.load_mni152_brain_mask(resolution=1).dataobj) > 0) | gm | wm
    return t1, tissue_labels(t1, gm, wm, brain), template.affine


def tissue_labels(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """1 grey matter, 2 white matter, 3 CSF and the rest of the brain, 0 outside (see the module
    docstring for the rule)."""
    gm_only, wm_only, rest = gm & ~wm, wm & ~gm, brain & ~gm & ~wm
    med = {k: float(np.median(t1[m])) for k, m in (("gm", gm_only), ("wm", wm_only), ("rest", rest))}
    gm_wm = (med["gm"] + med["wm"]) / 2
    csf_gm = (med["rest"] + med["gm"]) / 2
    labels = np.zeros(t1.shape, np.uint8)
    labels[gm] = 1
    labels[wm_only | (gm & wm & (t1 >= gm_wm))] = 2
    labels[rest | (brain & (t1 < csf_gm))] = 3
    return labels


def brain_extent(labels: np.ndarray) -> np.ndarray:
    """The axial slices (z) whose brain area is at least a tenth of the largest one's."""
    area = (labels > 0).sum((0, 1))
    return np.flatnonzero(area >= 0.1 * area.max())


def write_nnunet(out: Path, t1: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    root = out / "Dataset611_MNI152Tissue"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    zs = brain_extent(labels)
    for case, slab in enumerate(np.array_split(zs, CASES)):
        shifted = affine.copy()
        shifted[:3, 3] += affine[:3, 2] * slab[0]  # the slab keeps its place in MNI space
        name = f"mni_{case:03d}"
        nib.save(nib.Nifti1Image(t1[:, :, slab], shifted), root / "imagesTr" / f"{name}_0000.nii.gz")
        nib.save(nib.Nifti1Image(labels[:, :, slab], shifted), root / "labelsTr" / f"{name}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "grey_matter": 1, "white_matter": 2, "csf_and_rest": 3},
        "numTraining": CASES, "file_ending": ".nii.gz", "name": "MNI152Tissue"}, indent=2) + "\n")
    return root


def _jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded shift, gamma and noise on a [0, 1] slice."""
    dy, dx = rng.integers(-6, 7, size=2)
    moved = np.roll(image, (int(dy), int(dx)), axis=(0, 1))
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    return np.clip(moved ** gamma + rng.normal(0, 0.02, moved.shape), 0, 1)


def write_levels(out: Path, t1: np.ndarray, labels: np.ndarray, seed: int = 0) -> Path:
    from PIL import Image

    root = out / "slice_level"
    zs = brain_extent(labels)
    lo, hi = np.percentile(t1[labels > 0], [1, 99])
    rng = np.random.default_rng(seed)
    for k, z in enumerate(zs):
        level = LEVELS[min(len(LEVELS) - 1, k * len(LEVELS) // len(zs))]
        block = (k // BLOCK) % 5
        split = "train" if block < 3 else ("val" if block == 3 else "test")
        image = np.clip((t1[:, :, z] - lo) / (hi - lo), 0, 1)  # the orientation the nnU-Net cases load in
        folder = root / split / level
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (255 * _jitter(image, rng)).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"z{int(z):03d}.png")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/multitask-data"),
                        help="folder to write both datasets into (default: runs/multitask-data)")
    args = parser.parse_args(argv)
    t1, labels, affine = load_template()
    seg = write_nnunet(args.out, t1, labels, affine)
    cls = write_levels(args.out, t1, labels)
    counts = {name: int((labels == v).sum()) for v, name in enumerate(("background", "gm", "wm", "csf"))}
    print(f"segmentation: {seg} ({CASES} cases; voxels {counts})")
    print(f"classification: {cls} ({sum(1 for _ in cls.rglob('*.png'))} slices)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
