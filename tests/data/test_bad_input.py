"""Every kind of bad input: one DatasetError line naming the file, or a skip_bad record."""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from tests.data.synth_layouts import (
    MAKERS,
    box_mask,
    make_busi,
    make_kvasir,
    make_msd,
    save_mask,
    save_rgb,
    truncate,
)

ROOTED = sorted(MAKERS)


@pytest.mark.parametrize("name", ROOTED)
def test_missing_and_empty_root(tmp_path, name):
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset(name, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="is empty"):
        build_dataset(name, tmp_path / "empty")
    with pytest.raises(DatasetError, match="no dataset folder given; set root to"):
        build_dataset(name, None)
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    with pytest.raises(DatasetError, match="expected layout"):
        build_dataset(name, tmp_path / "other")


@pytest.mark.parametrize("name", ROOTED)
def test_unknown_option_lists_known_ones(tmp_path, name):
    with pytest.raises(DatasetError, match=r"unknown option\(s\) colour; known: .*seed"):
        build_dataset(name, MAKERS[name](tmp_path), colour="red")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = make_busi(tmp_path) / "Dataset_BUSI_with_GT"
    (root / "benign" / "benign (3)_mask.png").unlink()
    save_mask(box_mask(1, 3, 1, 3), root / "malignant" / "malignant (9)_mask.png")
    with pytest.raises(DatasetError) as exc:
        build_dataset("busi", tmp_path)
    msg = _one_line(exc)
    assert "benign (3).png: image without a mask" in msg and "and 1 more problem" in msg
    ds = build_dataset("busi", tmp_path, skip_bad=True)
    assert "benign_3" not in ds.ids and len(ds) == 9
    reasons = {r["path"].split("/")[-1]: r["reason"] for r in ds.skipped}
    assert reasons["benign (3).png"].startswith("image without a mask")
    assert reasons["malignant (9)_mask.png"].startswith("mask without an image")


def test_kvasir_unpaired_files(tmp_path):
    root = make_kvasir(tmp_path)
    (root / "masks" / "cju001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"cju001\.jpg: image without a mask"):
        build_dataset("kvasir-seg", root)


def test_size_mismatch_found_at_load_names_the_mask(tmp_path):
    root = make_kvasir(tmp_path)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "cju002.jpg")
    ds = build_dataset("kvasir-seg", root)  # building only pairs names: cheap, no decoding
    with pytest.raises(DatasetError) as exc:
        ds.load(ds.index_of("cju002"))
    assert "masks/cju002.jpg: mask is 16x16 (WxH) but image cju002.jpg is 32x32" in _one_line(exc)
    skipping = build_dataset("kvasir-seg", root, skip_bad=True)
    assert "cju002" not in skipping.ids
    assert skipping.skipped == [{"path": str(root / "masks" / "cju002.jpg"),
                                 "reason": "mask is 16x16 (WxH) but image cju002.jpg is 32x32"}]


def test_truncated_png_is_reported_not_half_read(tmp_path):
    root = make_busi(tmp_path) / "Dataset_BUSI_with_GT"
    truncate(root / "benign" / "benign (4).png")
    ds = build_dataset("busi", tmp_path)
    with pytest.raises(DatasetError) as exc:
        ds.load(ds.index_of("benign_4"))
    assert "benign (4).png: unreadable or truncated image" in _one_line(exc)
    ds = build_dataset("busi", tmp_path, skip_bad=True)
    assert len(ds) == 9 and ds.skipped[0]["path"].endswith("benign (4).png")


def test_non_binary_png_mask_but_jpeg_mask_is_thresholded(tmp_path):
    root = make_busi(tmp_path) / "Dataset_BUSI_with_GT"
    grades = box_mask(2, 8, 2, 8)
    grades[2:4] = 100
    save_mask(grades, root / "benign" / "benign (1)_mask.png")
    ds = build_dataset("busi", tmp_path)
    with pytest.raises(DatasetError) as exc:
        ds.load(ds.index_of("benign_1"))
    msg = _one_line(exc)
    assert "benign (1)_mask.png: mask is not binary (values 0, 100, 255)" in msg and "threshold" in msg
    # A single foreground value other than 255 is still binary.
    save_mask(box_mask(2, 8, 2, 8, value=1), root / "benign" / "benign (1)_mask.png")
    assert build_dataset("busi", tmp_path).load(0).mask.sum() == 36


def test_folder_mask_mode_threshold_accepts_grey_levels(tmp_path):
    root = tmp_path / "f"
    save_rgb(0, root / "images" / "x.png", 8, 8)
    save_mask(np.array([[0, 100, 200, 255]] * 8, np.uint8).repeat(2, axis=1), root / "masks" / "x.png")
    with pytest.raises(DatasetError, match="not binary"):
        build_dataset("folder", root).load(0)
    mask = build_dataset("folder", root, mask_mode="threshold").load(0).mask
    assert mask[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_nifti_pair_with_different_shapes_found_at_build(tmp_path):
    root = make_msd(tmp_path)
    nib.save(nib.Nifti1Image(np.zeros((16, 18, 9), np.uint8), np.eye(4)), root / "labelsTr" / "case_3.nii.gz")
    with pytest.raises(DatasetError) as exc:
        build_dataset("msd", root)
    assert "labelsTr/case_3.nii.gz: NIfTI pair has different shapes" in _one_line(exc)
    ds = build_dataset("msd", root, skip_bad=True)
    assert "case_3" not in {s.group for s in ds.samples} and len(ds.skipped) == 1


def test_nifti_unpaired_and_truncated_volume(tmp_path):
    root = make_msd(tmp_path)
    (root / "labelsTr" / "case_1.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"imagesTr/case_1\.nii\.gz: image without a label"):
        build_dataset("msd", root)
    truncate(root / "imagesTr" / "case_2.nii.gz")
    ds = build_dataset("msd", root, skip_bad=True)
    assert {s.group for s in ds.samples} == {"case_0", "case_3", "case_4"}
    paths = sorted(r["path"].split("/")[-1] for r in ds.skipped)
    assert paths == ["case_1.nii.gz", "case_2.nii.gz"]
    assert any("truncated" in r["reason"] for r in ds.skipped)


def test_all_files_bad_is_one_clear_error(tmp_path):
    root = make_kvasir(tmp_path, n=2)
    for p in (root / "images").iterdir():
        truncate(p)
    with pytest.raises(DatasetError, match="no usable samples found; 2 file") as info:
        build_dataset("kvasir-seg", root, skip_bad=True)
    assert "skip_bad" not in str(info.value) and "skip-bad" not in str(info.value)  # it was passed
    with pytest.raises(DatasetError, match="use skip_bad to leave") as info:  # without it
        build_dataset("kvasir-seg", root).load(0)
    assert info.value.fields == ("skip_bad",)  # the CLI prints it as --skip-bad


def test_bad_options(tmp_path):
    root = make_msd(tmp_path)
    for opts, match in [({"fractions": (0.5, 0.5)}, "fractions"), ({"axis": 3}, "axis"),
                        ({"empty_slices": "some"}, "empty_slices"), ({"window": [5, 1]}, "low < high"),
                        ({"labels": 0}, "background"), ({"seed": "x"}, "seed")]:
        with pytest.raises(DatasetError, match=match):
            build_dataset("msd", root, **opts)
