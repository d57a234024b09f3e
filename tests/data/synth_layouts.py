"""Miniature synthetic copies of every published layout (16-32 px images), for the loader tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 20, 24


def rgb(seed: int, h: int = H, w: int = W) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def box_mask(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


def save_mask(array: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def save_rgb(seed: int, path: Path, h: int = H, w: int = W, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb(seed, h, w).save(path, **kw)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_busi(tmp: Path) -> Path:
    """benign 1-4 (benign (2) has _mask_1), malignant 1-3, normal 1-3 (normal (1) has an empty mask)."""
    root = tmp / "Dataset_BUSI_with_GT"
    seed = 0
    for label, n in (("benign", 4), ("malignant", 3), ("normal", 3)):
        for i in range(1, n + 1):
            seed += 1
            stem = f"{label} ({i})"
            save_rgb(seed, root / label / f"{stem}.png")
            if label != "normal":
                save_mask(box_mask(2, 8, 2, 8), root / label / f"{stem}_mask.png")
            elif i == 1:
                save_mask(np.zeros((H, W), np.uint8), root / label / f"{stem}_mask.png")
    save_mask(box_mask(12, 16, 14, 20), root / "benign" / "benign (2)_mask_1.png")
    return tmp  # the loader finds Dataset_BUSI_with_GT one level down


def make_kvasir(tmp: Path, n: int = 6) -> Path:
    root = tmp / "Kvasir-SEG"
    for i in range(n):
        save_rgb(i, root / "images" / f"cju{i:03d}.jpg", 32, 32, quality=90)
        yy, xx = np.mgrid[:32, :32]
        disc = (((yy - 16) ** 2 + (xx - 15) ** 2) < 64).astype(np.uint8) * 255
        save_mask(np.stack([disc] * 3, axis=2), root / "masks" / f"cju{i:03d}.jpg", quality=75)
    return root


def make_cvc(tmp: Path, n: int = 6, ext: str = ".tif") -> Path:
    root = tmp / "CVC-ClinicDB"
    for i in range(1, n + 1):
        save_rgb(i, root / "Original" / f"{i}{ext}")
        save_mask(box_mask(3, 9, 4, 4 + i), root / "Ground Truth" / f"{i}{ext}")
    return root


def make_drive(tmp: Path, test_labels: bool = True) -> Path:
    root = tmp / "DRIVE"
    for part, numbers in (("training", range(21, 26)), ("test", range(1, 4))):
        for n in numbers:
            name = f"{n:02d}_{part}"
            save_rgb(n, root / part / "images" / f"{name}.tif")
            save_mask(box_mask(0, H, 0, W, value=255), root / part / "mask" / f"{name}_mask.gif")
            if part == "training" or test_labels:
                save_mask(box_mask(5, 7, 0, W), root / part / "1st_manual" / f"{n:02d}_manual1.gif")
    return root


def make_msd(tmp: Path, n: int = 5, modality: dict | None = None, depth: int = 10,
             shape: tuple[int, int] = (16, 18)) -> Path:
    """CT task: n volumes (16, 18, depth) int16 HU; label 1 in slices 2-4, label 2 in slice 3."""
    import nibabel as nib

    root = tmp / "Task09_Tiny"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTs").mkdir()
    modality = modality or {"0": "CT"}
    (root / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "modality": modality, "labels": {"0": "background", "1": "organ", "2": "tumour"},
        "training": [{"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"}
                     for i in range(n)]}))
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    for i in range(n):
        channels = len(modality)
        vol_shape = (*shape, depth) + ((channels,) if channels > 1 else ())
        image = rng.integers(-300, 400, vol_shape).astype(np.int16)
        label = np.zeros((*shape, depth), np.uint8)
        label[4:10, 5:12, 2:5] = 1
        label[6:8, 6:8, 3] = 2
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i}.nii.gz")
    (root / "imagesTr" / "._case_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    return root


def make_folder(tmp: Path) -> Path:
    """Mixed formats: png/bmp/tif/gif images and masks; one '_mask' suffix; one JPEG mask."""
    root = tmp / "mine"
    formats = [("a", ".png", ".png"), ("b", ".bmp", ".gif"), ("c", ".tif", ".tif"),
               ("d", ".jpg", ".png"), ("e", ".gif", "_mask.png"), ("f", ".png", ".jpg")]
    for i, (stem, iext, mext) in enumerate(formats):
        img = rgb(i).convert("P") if iext == ".gif" else rgb(i)
        img.save(_mk(root / "images" / f"{stem}{iext}"))
        save_mask(box_mask(2, 10, 3, 11), root / "masks" / f"{stem}{mext}")
    return root


def make_images(tmp: Path) -> Path:
    """Unlabelled: images only, one in a subfolder, mixed formats."""
    root = tmp / "pool"
    for i, rel in enumerate(["a.png", "b.jpg", "ward2/a.png", "ward2/c.tif"]):
        rgb(i).save(_mk(root / rel))
    return root


def make_aptos(tmp: Path, n: int = 15) -> Path:
    """n fundus images, grades 0-4 in turn (3 per grade), listed in train.csv; a test.csv without
    grades, as the release has."""
    root = tmp / "aptos2019-blindness-detection"
    rows = ["id_code,diagnosis"]
    for i in range(n):
        code = f"{i:04x}ab{i:02d}"
        save_rgb(100 + i, root / "train_images" / f"{code}.png")
        rows.append(f"{code},{i % 5}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "test.csv").write_text("id_code\nffff0000\n")
    return tmp  # the loader finds the folder one level down


ISIC_PARTS = (("Training", 9), ("Validation", 3), ("Test_v2", 3))


def make_isic(tmp: Path, parts: tuple[tuple[str, int], ...] = ISIC_PARTS) -> Path:
    """Each part: its Part3 ground-truth CSV (0.0/1.0 flags, the release's form) and _Data folder
    with ISIC_<n>.jpg and the _superpixels.png files the release ships beside them. Classes cycle
    melanoma, seborrheic_keratosis, nevus."""
    root = tmp / "ISIC2017"
    flags = ("1.0,0.0", "0.0,1.0", "0.0,0.0")
    k = 0
    for part, n in parts:
        rows = ["image_id,melanoma,seborrheic_keratosis"]
        for _ in range(n):
            stem = f"ISIC_{k:07d}"
            save_rgb(200 + k, root / f"ISIC-2017_{part}_Data" / f"{stem}.jpg", quality=90)
            save_mask(box_mask(0, 4, 0, 4), root / f"ISIC-2017_{part}_Data" / f"{stem}_superpixels.png")
            rows.append(f"{stem},{flags[k % 3]}")
            k += 1
        (root / f"ISIC-2017_{part}_Part3_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return root


def make_classes(tmp: Path, splits: bool = False) -> Path:
    """ImageFolder: cat/ (4 images), dog/ (4), zebra/ (3), mixed formats, a hidden folder; with
    splits=True the same under train/ and a smaller val/ and test/."""
    root = tmp / "pets"
    counts = {"cat": 4, "dog": 4, "zebra": 3}
    parts = (("train", counts), ("val", {"cat": 1, "dog": 1}), ("test", {"cat": 1, "zebra": 1})) \
        if splits else ((".", counts),)
    seed = 300
    for part, sizes in parts:
        for name, n in sizes.items():
            for i in range(n):
                seed += 1
                ext = (".png", ".jpg", ".bmp")[i % 3]
                save_rgb(seed, root / part / name / f"{i:03d}{ext}")
    (root / ".ipynb_checkpoints").mkdir()
    return root


def make_nnunet(tmp: Path, n: int = 4, depth: int = 6) -> Path:
    """nnU-Net v2, 3D MRI: n cases (12, 14, depth); 'left' (1) in slices 1-3, 'right' (2) in
    slices 2-4, side by side; imagesTs/ without labels as the release has."""
    import nibabel as nib

    root = tmp / "Dataset501_Tiny"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "left": 1, "right": 2},
        "numTraining": n, "file_ending": ".nii.gz", "name": "Tiny"}))
    rng = np.random.default_rng(1)
    affine = np.diag([1.2, 1.1, 3.0, 1.0])
    for i in range(n):
        image = rng.integers(0, 1000, (12, 14, depth)).astype(np.int16)
        label = np.zeros((12, 14, depth), np.uint8)
        label[2:6, 2:6, 1:4] = 1
        label[2:6, 8:12, 2:5] = 2
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"tiny_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"tiny_{i:03d}.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((12, 14, depth), np.int16), affine),
             root / "imagesTs" / "tiny_900_0000.nii.gz")
    return tmp  # found one level down


def make_nnunet_png(tmp: Path, n: int = 5) -> Path:
    """nnU-Net v2, 2D natural images: RGB in <case>_0000.png (channel_names R, G, B), label PNGs
    with values 0 (background), 1 (road) in rows 0-5, 2 (car) in a 4x4 box."""
    root = tmp / "Dataset502_Road"
    (root / "dataset.json").parent.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "road": 1, "car": 2}, "numTraining": n, "file_ending": ".png"}))
    for i in range(n):
        save_rgb(400 + i, root / "imagesTr" / f"road_{i:02d}_0000.png")
        label = box_mask(0, 6, 0, W, value=1)
        label[10:14, 4 + i:8 + i] = 2
        save_mask(label, root / "labelsTr" / f"road_{i:02d}.png")
    return root


def make_dicom(tmp: Path, n: int = 4, depth: int = 5, orientation=None, slope: float = 1.0) -> Path:
    """n CT cases of 16x16xdepth: images/case_k/series/IM*.dcm (names shuffled; axial unless an
    `orientation` is given, stored values times `slope` minus 1024 = HU) and labels/case_k.nii.gz
    stored row-flipped as dcm2niix writes (label 1 in slices 1-3, label 2 in slice 2);
    dataset.json names the labels."""
    import nibabel as nib

    from tests.data.synth_dicom import AXIAL, flip_rows, ramp_volume, ras_affine, write_series

    orientation = orientation or AXIAL

    root = tmp / "dicom_ds"
    (root / "labels").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ",
                                                              "2": "tumour"}}))
    for k in range(n):
        write_series(root / "images" / f"case_{k}" / "series", ramp_volume((16, 16, depth), seed=k), seed=k,
                     orientation=orientation, slope=slope)
        label = np.zeros((16, 16, depth), np.uint8)
        label[4:10, 5:12, 1:4] = 1
        label[6:8, 6:8, 2] = 2
        data, affine = flip_rows(label, ras_affine(orientation))
        nib.save(nib.Nifti1Image(data, affine), root / "labels" / f"case_{k}.nii.gz")
    return root


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


MAKERS = {"busi": make_busi, "kvasir-seg": make_kvasir, "cvc-clinicdb": make_cvc, "drive": make_drive,
          "msd": make_msd, "folder": make_folder, "images": make_images, "aptos2019": make_aptos,
          "isic2017": make_isic, "classes": make_classes, "nnunet": make_nnunet,
          "dicom": make_dicom}

# Other forms of a loader that the dataset contract covers too: variant -> (loader, maker, options).
VARIANTS = {
    "msd[labels=tumour,organ]": ("msd", make_msd, {"labels": ["tumour", "organ"]}),
    "nnunet[png]": ("nnunet", make_nnunet_png, {}),
    "nnunet[labels=right]": ("nnunet", make_nnunet, {"labels": "right"}),
    "classes[split folders]": ("classes", lambda tmp: make_classes(tmp, splits=True), {}),
    "isic2017[one part]": ("isic2017", lambda tmp: make_isic(tmp, (("Training", 9),)), {}),
}
