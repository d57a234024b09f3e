"""nnunet (3D NIfTI and 2D PNG) on miniature nnU-Net v2 raw layouts, multi-class masks included."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.check import check_dataset
from featcache.data.registry import build_dataset, dataset_modality
from featcache.errors import DatasetError
from tests.data.synth_layouts import H, W, box_mask, make_nnunet, make_nnunet_png, rgb, save_mask


def _edit_json(root, **changes):
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    path.write_text(json.dumps(data))


def test_3d_every_label_is_a_class_by_default(tmp_path):
    ds = build_dataset("nnunet", make_nnunet(tmp_path))
    assert ds.classes == ("left", "right") and ds.modality == "T2" and ds.channels == 1
    assert ds.options["labels"] == [[1], [2]]
    # Foreground in slices 1-4 of each case, plus as many (2 of 2) empty ones: 6 per case.
    assert len(ds) == 4 * 6 and len({s.group for s in ds.samples}) == 4
    sample = ds.load(ds.index_of("tiny_000_s0002"))
    assert sample.mask.shape == (12, 14) and sample.image.shape == (12, 14, 1)
    assert (sample.mask == 1).sum() == 16 and (sample.mask == 2).sum() == 16
    assert ds.samples[ds.index_of("tiny_000_s0002")].meta["spacing"] == [1.2, 1.1]
    assert not any(i.startswith("tiny_900") for i in ds.ids)  # imagesTs has no labels


def test_3d_labels_option_picks_classes_like_msd(tmp_path):
    root = make_nnunet(tmp_path)
    right = build_dataset("nnunet", root, labels="right", empty_slices="none")
    assert right.classes == ("right",) and right.options["labels"] == [2]
    assert sorted({s.meta["slice"] for s in right.samples}) == [2, 3, 4]
    assert set(np.unique(right.load(0).mask)) == {0, 1}
    merged = build_dataset("nnunet", root, labels=[["left", "right"]])
    assert merged.classes == ("left+right",)
    assert merged.load(merged.index_of("tiny_001_s0002")).mask.sum() == 32
    swapped = build_dataset("nnunet", root, labels=["right", "left"])
    assert swapped.load(swapped.index_of("tiny_000_s0001")).mask.max() == 2  # left is class 2 now
    assert swapped.fingerprint() != build_dataset("nnunet", root).fingerprint()
    with pytest.raises(DatasetError, match="nnunet: unknown label 'liver'; known: 0=background, 1=left"):
        build_dataset("nnunet", root, labels="liver")


def test_3d_split_by_case_and_seed(tmp_path):
    root = make_nnunet(tmp_path)
    ds = build_dataset("nnunet", root, seed=1)
    by_case = {}
    for s in ds.samples:
        by_case.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in by_case.values())
    assert [s.split for s in build_dataset("nnunet", root, seed=1).samples] == [s.split for s in ds.samples]


def test_png_rgb_cases_are_one_sample_each(tmp_path):
    ds = build_dataset("nnunet", make_nnunet_png(tmp_path))
    assert ds.classes == ("road", "car") and ds.channels == 3 and ds.modality == "R/G/B"
    assert len(ds) == 5 and ds.ids[0] == "road_00"
    sample = ds.load(0)
    assert sample.image.shape == (H, W, 3) and sample.mask.dtype == np.uint8
    assert (sample.mask == 1).sum() == 6 * W and (sample.mask == 2).sum() == 16
    car = build_dataset("nnunet", make_nnunet_png(tmp_path / "b"), labels="car")
    assert car.classes == ("car",) and car.load(0).mask.sum() == 16
    assert dataset_modality("nnunet") == "per dataset.json channel_names"


def test_png_grey_channel_files(tmp_path):
    root = make_nnunet_png(tmp_path)
    _edit_json(root, channel_names={"0": "A", "1": "B"})
    for path in sorted((root / "imagesTr").glob("*_0000.png")):
        rgb(1).convert("L").save(path)
        rgb(2).convert("L").save(str(path).replace("_0000.png", "_0001.png"))
    ds = build_dataset("nnunet", root, channel=1)
    assert ds.channels == 1 and ds.modality == "B" and ds.load(0).image.shape == (H, W, 1)
    with pytest.raises(DatasetError, match=r"channel must be 0..1, got 2"):
        build_dataset("nnunet", root, channel=2)


@pytest.mark.parametrize("changes, expected", [
    ({"file_ending": None}, "key 'file_ending' is missing"),
    ({"labels": None}, "key 'labels' is missing"),
    ({"file_ending": ".mha"}, r"key 'file_ending' is '.mha'; featcache reads .nii.gz, .nii, .png"),
    ({"labels": {"road": 1, "car": 2}}, "key 'labels' has no background"),
    ({"labels": {"background": 0, "road": [1, 2]}}, r"region-based labels \(road\)"),
    ({"labels": {"background": 0, "road": "1"}}, "must map label names to integer values"),
    ({"channel_names": {"1": "R"}}, "key 'channel_names' must number its channels 0, 1, 2"),
])
def test_bad_dataset_json_key_is_one_line(tmp_path, changes, expected):
    root = make_nnunet_png(tmp_path)
    _edit_json(root, **changes)
    with pytest.raises(DatasetError, match=expected) as exc:
        build_dataset("nnunet", root)
    assert "dataset.json" in str(exc.value) and "\n" not in str(exc.value)


def test_bad_files_are_named(tmp_path):
    root = make_nnunet_png(tmp_path)
    (root / "labelsTr" / "road_01.png").unlink()
    with pytest.raises(DatasetError, match=r"road_01_0000.png: image without a label road_01.png"):
        build_dataset("nnunet", root)
    stray = box_mask(0, 3, 0, 3, value=7)
    save_mask(stray, root / "labelsTr" / "road_01.png")
    ds = build_dataset("nnunet", root)
    with pytest.raises(DatasetError, match=r"road_01.png: label values \[7\] are not declared"):
        ds.load(ds.index_of("road_01"))
    save_mask(np.stack([stray] * 3, axis=2), root / "labelsTr" / "road_02.png")
    report = check_dataset("nnunet", root)
    assert [p["path"].rsplit("/", 1)[-1] for p in report.problems] == ["road_01.png", "road_02.png"]
    assert "mode RGB (colour)" in report.problems[1]["reason"]
    assert len(build_dataset("nnunet", root, skip_bad=True)) == 3


def test_datasets_check_on_nnunet(tmp_path):
    result = CliRunner().invoke(app, ["datasets", "check", "-d", "nnunet", "-r", str(make_nnunet(tmp_path))],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "ok: 24 sample(s) load cleanly" in result.output, result.output
    assert "left" in result.output and "right" in result.output  # samples showing each class


def test_check_counts_foreground_of_any_class_and_samples_per_class(tmp_path):
    report = check_dataset("nnunet", make_nnunet_png(tmp_path))
    whole = report.splits["all"]
    assert whole.mean_foreground == pytest.approx((6 * W + 16) / (H * W))  # not the mean label value
    assert whole.labels == {0: 5, 1: 5} and report.classes == ("road", "car")
