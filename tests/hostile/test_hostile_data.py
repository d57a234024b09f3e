"""Issue 36, items 8, 9, 25-28: datasets and inputs that used to pass as something else: NaN
voxels, a classification set of one class, a CSV row listed twice, dataset.json variants, and
datasets whose every volume is bad."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featcache.data.check import check_dataset
from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from tests.data.synth_layouts import make_classes, make_isic, make_msd, make_nnunet
from tests.hostile.conftest import cli


def _nan_voxels(path, count: int = 5) -> None:
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    data[np.unravel_index(np.arange(count), data.shape)] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(path))


def test_hostile_predict_refuses_a_volume_with_nan_voxels(tmp_path):
    """Item 8: not an empty mask for the whole volume, but one line naming the file."""
    import nibabel as nib

    from tests.evaluate.conftest import make_run

    run = make_run(tmp_path / "run")
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(100, 20, (16, 16, 3)).astype(np.float32), np.eye(4)),
             str(tmp_path / "ct.nii.gz"))
    _nan_voxels(tmp_path / "ct.nii.gz")
    res, errors = cli("predict", "--run", run, "--input", tmp_path / "ct.nii.gz", "--out", tmp_path / "out")
    assert res.exit_code == 1 and "ct.nii.gz" in errors[0] and "5 non-finite voxel(s)" in errors[0]
    assert not (tmp_path / "out" / "masks" / "ct.nii.gz").exists()


def test_hostile_nan_voxels_are_the_dataset_s_fault_in_check_and_extract(tmp_path):
    """Item 9: `datasets check` names the case; extract stops on it as a dataset error before
    any teacher sees it (the teacher is never blamed)."""
    root = make_nnunet(tmp_path)
    case = next((root / "Dataset501_Tiny" / "imagesTr").glob("tiny_001_0000.nii.gz"))
    _nan_voxels(case)
    res, _ = cli("datasets", "check", "--dataset", "nnunet", "--root", root)
    assert res.exit_code == 1 and "tiny_001_0000.nii.gz" in res.output, res.output
    assert "5 non-finite voxel(s)" in res.output and "load cleanly" not in res.output, res.output
    dataset = build_dataset("nnunet", root)
    bad = next(i for i, s in enumerate(dataset.samples) if s.id.startswith("tiny_001"))
    with pytest.raises(DatasetError, match="tiny_001_0000.nii.gz.*non-finite"):
        dataset.load(bad)
    res, errors = cli("extract", "--teacher", "timm", "--arch", "resnet18", "--random-init", "--dataset",
                      "nnunet", "--root", root, "--store", tmp_path / "s", "--device", "cpu",
                      "--loader-workers", "0", env={"FEATCACHE_CACHE_DIR": str(tmp_path / "cache")})
    assert res.exit_code == 1 and "tiny_001_0000.nii.gz" in errors[0] and "teacher" not in errors[0]
    kept = build_dataset("nnunet", root, skip_bad=True)  # and skip_bad leaves it out, with its reason
    assert not any(s.id.startswith("tiny_001") for s in kept.samples)
    assert "non-finite" in kept.skipped[0]["reason"]


def test_hostile_a_float_image_with_nan_is_named_not_blanked(tmp_path):
    """Item 9 for 2D: a float TIFF with NaN was silently all zeros."""
    from PIL import Image

    from featcache.data.recipe import Recipe
    from featcache.data.serving import image_input

    pixels = np.full((8, 8), 0.5, np.float32)
    pixels[2, 3] = np.nan
    Image.fromarray(pixels, mode="F").save(tmp_path / "x.tif")
    with pytest.raises(DatasetError, match="x.tif: holds 1 non-finite pixel"):
        image_input(tmp_path / "x.tif", Recipe("image"))  # as predict reads it


def test_hostile_a_one_class_classification_dataset_is_refused_at_the_start(tmp_path, monkeypatch):
    """Item 25: extract and distill never start on it ("best val Dice 1.0000" then nothing)."""
    import shutil

    root = make_classes(tmp_path)
    for name in ("dog", "zebra"):
        shutil.rmtree(root / name)
    with pytest.raises(DatasetError, match="every usable image is of class 'cat'.*at least two classes"):
        build_dataset("classes", root)
    res, errors = cli("extract", "--teacher", "timm", "--arch", "resnet18", "--random-init", "--dataset",
                      "classes", "--root", root, "--store", tmp_path / "s", "--device", "cpu",
                      env={"FEATCACHE_CACHE_DIR": str(tmp_path / "cache")})
    assert res.exit_code == 1 and "at least two classes" in errors[0]
    assert not (tmp_path / "s").exists() or not any(p.is_dir() for p in (tmp_path / "s").iterdir())


def test_hostile_a_csv_row_listed_twice_is_named(tmp_path):
    """Item 26: one file, two rows: the repeated row is named, not a rename asked for."""
    root = make_isic(tmp_path)
    csv_path = root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([*lines, lines[2]]) + "\n")
    with pytest.raises(DatasetError) as info:
        build_dataset("isic2017", root)
    message = str(info.value)
    assert f"{csv_path}:{len(lines) + 1}" in message and "listed twice (first on line 3)" in message
    assert "rename" not in message


@pytest.mark.parametrize("modality", [{"a": "CT"}, ["CT"], "CT", {"0": "CT"}, 7])
def test_hostile_msd_modality_forms(tmp_path, modality):
    """Item 27: the forms converted datasets write are read; any other is one named line."""
    root = make_msd(tmp_path, n=3)
    data = json.loads((root / "dataset.json").read_text())
    data["modality"] = modality
    (root / "dataset.json").write_text(json.dumps(data))
    if modality in (["CT"], "CT", {"0": "CT"}):
        assert build_dataset("msd", root).modality == "CT"
        return
    res, errors = cli("datasets", "check", "--dataset", "msd", "--root", root)
    assert res.exit_code == 1 and "dataset.json" in errors[0] and "'modality'" in errors[0], res.output


@pytest.mark.parametrize("loader", ["msd", "nnunet"])
def test_hostile_every_volume_bad_says_why_each_was_skipped(tmp_path, loader):
    """Item 28: "no slices to use" with the reason of each file, not only a count."""
    root = make_msd(tmp_path, n=3) if loader == "msd" else make_nnunet(tmp_path, n=3)
    folder = root if loader == "msd" else root / "Dataset501_Tiny"
    for path in sorted((folder / "imagesTr").glob("[!.]*.nii.gz")):
        _nan_voxels(path)
    with pytest.raises(DatasetError) as info:
        check_dataset(loader, root)
    message = str(info.value)
    assert "3 file(s) skipped:" in message and message.count("non-finite voxel(s)") == 3, message
    res, errors = cli("datasets", "check", "--dataset", loader, "--root", root)
    assert res.exit_code == 1 and "non-finite" in errors[0]
