"""DICOM in, as every dataset kind: `predict` on the raw series gives exactly the predictions
`eval` makes on the same items (label maps equal, probabilities within 1e-5), the written NIfTI
has the series' affine and shape, and the DICOM-SEG written beside it holds the same label map,
keeps the study and is a new series. The series is oblique, its files shuffled, its CT values
stored with a slope of 2."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.dicom import read_seg_labels
from featcache.data.loaders.dicom import load_case
from featcache.data.registry import build_dataset
from featcache.data.serving import read_classes
from featcache.data.volumes import slice_at
from featcache.errors import DatasetError
from featcache.evaluate.dicom_seg import write_dicom_seg
from featcache.evaluate.inputs import list_inputs
from featcache.evaluate.predict import predict_paths
from featcache.evaluate.predictor import Predictor
from tests.data.synth_dicom import oblique_orientation, ramp_volume, ras_affine, write_series
from tests.data.synth_layouts import make_dicom
from tests.evaluate.test_parity import _eval_predictions, make_run

OPTIONS = {"labels": ["organ", "tumour"], "empty_slices": "all", "window": [-500, 500]}


def test_dicom_parity(tmp_path):
    orientation = oblique_orientation(25, 10)
    root = make_dicom(tmp_path / "layout", n=2, orientation=orientation, slope=2.0)
    run = make_run(tmp_path / "run", [("dicom", root, OPTIONS)], mask_classes=2)
    predictor = Predictor.from_run(run)
    recipe = predictor.recipes["dicom"]
    assert recipe.reader == "dicom" and (recipe.intensity.low, recipe.intensity.high) == (-500, 500)
    out = tmp_path / "out"
    summary = predict_paths(predictor, root / "images", out, root / "labels")
    assert sorted(r.source.name for r in summary.results) == ["case_0", "case_1"]
    assert {r["id"] for r in summary.scores.per_image_rows()} == {"case_0", "case_1"}  # labels paired
    data = build_dataset("dicom", root, **OPTIONS)
    expected = _eval_predictions(predictor, data)
    for vid in ("case_0", "case_1"):
        case = data.case(vid)
        written = nib.load(str(out / "masks" / f"{vid}.nii.gz"))
        assert written.shape == case.series.shape == (16, 16, 5)
        np.testing.assert_allclose(written.affine, ras_affine(orientation), atol=1e-4)  # float32 in NIfTI
        classes = read_classes(out / "masks" / f"{vid}.nii.gz", recipe)
        probabilities = predictor.predict(case.folder)
        for info in (s for s in data.samples if s.group == vid):
            at = slice_at(info.meta["slice"], recipe.slicing.axis)
            label_map, probs = expected[info.id]
            assert np.array_equal(classes[at], label_map), info.id
            np.testing.assert_allclose(probabilities[at], probs, atol=1e-5, rtol=0)
        seg = out / "masks" / f"{vid}.seg.dcm"
        assert np.array_equal(read_seg_labels(seg, case.series), classes)  # segment k = class k
        header = pydicom.dcmread(seg, stop_before_pixels=True)
        assert header.StudyInstanceUID == case.series.study_uid != ""
        assert header.SeriesInstanceUID != case.series.series_uid
        assert [s.SegmentLabel for s in header.SegmentSequence] == ["organ", "tumour"]
    _scored_alike_with_seg_ground_truth(predictor, data, root, summary, tmp_path)


def _scored_alike_with_seg_ground_truth(predictor, data, root, summary, tmp_path) -> None:
    """--masks holding DICOM-SEGs whose segments are numbered the other way round (1 tumour,
    2 organ) score as the NIfTI labels did: segments are matched to classes by name."""
    segs = tmp_path / "seg_labels"
    for vid in ("case_0", "case_1"):
        _, label = load_case(data.case(vid), data.config)
        swapped = np.select([label == 2, label == 1], [1, 2], 0).astype(np.uint8)
        write_dicom_seg(swapped, data.case(vid).series, ("tumour", "organ"), segs / f"{vid}.dcm")
    again = predict_paths(predictor, root / "images", tmp_path / "out_seg", segs)
    assert again.scores.per_image_rows() == summary.scores.per_image_rows()


def test_predict_cli_on_one_dicom_series_folder(tmp_path):
    root = make_dicom(tmp_path / "layout", n=1)
    run = make_run(tmp_path / "run", [("dicom", root, {"fractions": [1, 0, 0]})])
    args = ["predict", "--run", str(run), "--input", str(root / "images" / "case_0"),
            "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "case_0" in result.output and "16×16×5" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["case_0.nii.gz",
                                                                            "case_0.seg.dcm"]


def test_dicom_inputs_are_the_series_named_by_their_folders(tmp_path):
    root = make_dicom(tmp_path / "layout", n=2)
    assert [(i.name, i.path) for i in list_inputs(root / "images")] == [
        ("case_0", root / "images" / "case_0"), ("case_1", root / "images" / "case_1")]
    one = root / "images" / "case_0" / "series"
    assert [i.name for i in list_inputs(one)] == ["series"]
    flat = tmp_path / "study"  # a PACS export: two series' files in one folder
    write_series(flat, ramp_volume((8, 8, 3)), series_number=3)
    write_series(flat, ramp_volume((8, 8, 2)), series_number=4)
    found = list_inputs(flat)
    assert [i.name for i in found] == ["study_s3", "study_s4"]
    assert [i.series.shape[2] for i in found] == [3, 2]
    for path in write_series(tmp_path / "other", ramp_volume((8, 8, 4)), series_number=4):
        path.rename(flat / f"other_{path.name}")  # a third series, numbered as the second
    with pytest.raises(DatasetError, match="several series would be named 'study_s4'; put each series"):
        list_inputs(flat)
