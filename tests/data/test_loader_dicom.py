"""The `dicom` loader on tiny synthetic cases: images/<case>/ DICOM series + labels/<case>.nii.gz."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.files import FileProblem
from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from tests.data.synth_dicom import ramp_volume, write_series
from tests.data.synth_layouts import make_dicom

FG = [1, 2, 3]  # slices holding label 1 (label 2 in slice 2)


def test_slices_are_windowed_hu_with_labels_on_the_series_grid(tmp_path):
    root = make_dicom(tmp_path, n=5)
    ds = build_dataset("dicom", root, labels=["organ", "tumour"], empty_slices="all")
    assert ds.modality == "CT" and ds.classes == ("organ", "tumour") and ds.options["window"] == [-160, 240]
    assert [s.id for s in ds.samples[:5]] == [f"case_0_s{k:04d}" for k in range(5)]
    assert {s.group for s in ds.samples} == {f"case_{k}" for k in range(5)}
    splits = {}
    for s in ds.samples:
        splits.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in splits.values())  # a case never straddles splits
    hu = ramp_volume((16, 16, 5), seed=0)  # what make_dicom wrote for case_0
    sample = ds.load(ds.index_of("case_0_s0002"))
    np.testing.assert_allclose(sample.image[:, :, 0], np.clip((hu[:, :, 2] + 160) / 400, 0, 1), atol=1e-6)
    expected = np.zeros((16, 16), np.uint8)
    expected[4:10, 5:12], expected[6:8, 6:8] = 1, 2
    np.testing.assert_array_equal(sample.mask, expected)  # the row-flipped NIfTI lies back on the grid
    assert sample.meta["spacing"] == pytest.approx([0.7, 0.8]) and sample.meta["modality"] == "CT"


def test_options_as_msd_axis_window_and_empty_slices(tmp_path):
    root = make_dicom(tmp_path, n=3)
    balanced = build_dataset("dicom", root, seed=1)
    per_case = {}
    for s in balanced.samples:
        per_case.setdefault(s.group, []).append(s.meta["slice"])
    assert all(set(FG) <= set(v) and len(v) == 5 for v in per_case.values())  # 3 fg + the 2 empty
    assert [s.meta["slice"] for s in build_dataset("dicom", root, empty_slices="none").samples][:3] == FG
    wide = build_dataset("dicom", root, axis=0, window=[-1000, 1000], empty_slices="all")
    sample = wide.load(wide.index_of("case_0_s0005"))
    hu = ramp_volume((16, 16, 5), seed=0)
    np.testing.assert_allclose(sample.image[:, :, 0], (hu[5] + 1000) / 2000, atol=1e-6)
    assert sample.image.shape == (16, 5, 1) and wide.samples[0].meta["spacing"] == pytest.approx([0.8, 2.5])


def test_mr_series_are_scaled_by_percentiles(tmp_path):
    root = make_dicom(tmp_path, n=1)
    shutil.rmtree(root / "images" / "case_0")
    values = np.abs(ramp_volume((16, 16, 5)))
    write_series(root / "images" / "case_0", values, modality="MR", intercept=0.0)
    ds = build_dataset("dicom", root, empty_slices="all", fractions=(1, 0, 0))
    lo, hi = np.percentile(values[values != 0], (1, 99))
    image = ds.load(ds.index_of("case_0_s0000")).image[:, :, 0]
    assert ds.modality == "MR" and ds.options["window"] is None
    np.testing.assert_allclose(image, np.clip((values[:, :, 0] - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_digest_follows_the_file_bytes(tmp_path):
    root = make_dicom(tmp_path, n=3)
    before = build_dataset("dicom", root).fingerprint()
    first = sorted((root / "images" / "case_1").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.PatientName = "Other^Name"  # same pixels, other bytes
    ds.save_as(first)
    assert build_dataset("dicom", root).fingerprint() != before


def test_layout_problems_are_one_line_or_skipped_with_a_record(tmp_path):
    root = make_dicom(tmp_path, n=4)
    (root / "labels" / "case_3.nii.gz").unlink()
    write_series(root / "images" / "case_2" / "localizer", ramp_volume((16, 16, 2)), seed=9)
    with pytest.raises(FileProblem, match=r"case_2: holds 2 image series: .*\(and 1 more problem.*\); "
                                          r"keep one series per folder"):
        build_dataset("dicom", root)
    ds = build_dataset("dicom", root, skip_bad=True)
    assert {s.group for s in ds.samples} == {"case_0", "case_1"}
    reasons = sorted(r["reason"].split(":")[0] for r in ds.skipped)
    assert reasons == ["case without a label", "holds 2 image series"]


def test_datasets_check_lists_a_case_whose_label_is_off_grid(tmp_path):
    root = make_dicom(tmp_path, n=3)
    shutil.copy(root / "labels" / "case_0.nii.gz", root / "labels" / "case_1.nii.gz")
    (root / "images" / "case_1" / "series").rename(root / "images" / "case_1" / "old")
    write_series(root / "images" / "case_1" / "series", ramp_volume((16, 16, 5)), origin=(0, 0, 0))
    shutil.rmtree(root / "images" / "case_1" / "old")
    result = CliRunner().invoke(app, ["datasets", "check", "--dataset", "dicom", "--root", str(root)],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "case_1.nii.gz" in result.output and "not on its image's grid" in result.output


def test_mixed_modalities_and_unknown_label_names_are_refused(tmp_path):
    root = make_dicom(tmp_path, n=2)
    with pytest.raises(DatasetError, match="unknown label 'liver'; known: 0=background, 1=organ, 2=tumour"):
        build_dataset("dicom", root, labels="liver")
    write_series(root / "images" / "case_1" / "series", np.abs(ramp_volume((16, 16, 5))), modality="MR",
                 intercept=0.0, series_uid=pydicom.dcmread(next((root / "images" / "case_1").rglob("*.dcm")))
                 .SeriesInstanceUID)
    with pytest.raises(DatasetError, match=r"dicom: the cases mix modalities \(CT in case_0, MR in case_1\)"):
        build_dataset("dicom", root)


def test_dataset_json_is_optional_for_nifti_labels(tmp_path):
    root = make_dicom(tmp_path, n=3)
    (root / "dataset.json").unlink()
    ds = build_dataset("dicom", root, labels=[1, 2])
    assert ds.classes == ("1", "2")
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ"}}))
    with pytest.raises(FileProblem, match=r"label values \[2\] are not declared in dataset.json"):
        build_dataset("dicom", root)
