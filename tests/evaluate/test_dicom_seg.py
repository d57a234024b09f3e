"""DICOM-SEG out (featcache/evaluate/dicom_seg.py): a label volume becomes a SEG of its source
series that keeps the study, is a new series, refers to every source slice and reads back the same;
the `dicom` dataset takes such SEGs as labels."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from featcache.data.dicom import read_seg_labels, scan_folder
from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from featcache.evaluate.dicom_seg import write_dicom_seg
from tests.data.synth_dicom import oblique_orientation, ramp_volume, write_series
from tests.data.synth_layouts import make_dicom


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FEATCACHE_CACHE_DIR", str(tmp_path_factory.mktemp("featcache-cache")))


def _series(tmp_path):
    write_series(tmp_path / "ct", ramp_volume((16, 12, 5)), orientation=oblique_orientation())
    return scan_folder(tmp_path / "ct").series[0]


def test_a_label_map_becomes_a_seg_of_the_series_that_reads_back_the_same(tmp_path):
    series = _series(tmp_path)
    labels = np.zeros(series.shape, np.uint8)
    labels[3:8, 2:6, 1:3] = 1
    labels[5:7, 4:5, 2] = 2
    path = write_dicom_seg(labels, series, ("liver", "tumour"), tmp_path / "out" / "seg.dcm", "run-a")
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == series.study_uid
    assert seg.SeriesInstanceUID not in (series.series_uid, "") and seg.FrameOfReferenceUID == \
        series.frame_of_reference_uid
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumour"]
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    instances = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = {i.ReferencedSOPInstanceUID for i in instances}
    assert referenced == set(series.sop_instance_uids)
    np.testing.assert_array_equal(read_seg_labels(path, series), labels)
    again = write_dicom_seg(labels, series, ("liver", "tumour"), tmp_path / "out" / "again.dcm")
    assert pydicom.dcmread(again).SeriesInstanceUID != seg.SeriesInstanceUID  # a new series each time
    empty = write_dicom_seg(np.zeros(series.shape, np.uint8), series, ("liver",), tmp_path / "out" / "e.dcm")
    assert not read_seg_labels(empty, series).any()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["again.dcm", "e.dcm", "seg.dcm"]


def test_a_label_map_off_the_series_grid_is_refused(tmp_path):
    series = _series(tmp_path)
    with pytest.raises(DatasetError, match=r"seg.dcm: label map \(16, 12, 4\) is not on the series' grid"):
        write_dicom_seg(np.zeros((16, 12, 4), np.uint8), series, ("liver",), tmp_path / "seg.dcm")
    with pytest.raises(DatasetError, match="label map holds value 2; classes are 1..1"):
        write_dicom_seg(np.full(series.shape, 2, np.uint8), series, ("liver",), tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def _segs_for_labels(root, names=("organ", "tumour")) -> dict[str, np.ndarray]:
    """Replace every labels/<case>.nii.gz by a DICOM-SEG of the same labels -> the masks the NIfTI
    labels gave, by sample id."""
    nifti = build_dataset("dicom", root, labels=[1, 2], empty_slices="all")
    masks = {info.id: nifti.load(i).mask for i, info in enumerate(nifti.samples)}
    for vid in sorted({s.group for s in nifti.samples}):
        case = nifti.case(vid)
        _, label = nifti._decode(vid)
        write_dicom_seg(label.astype(np.uint8), case.series, names, root / "labels" / f"{vid}.dcm")
        case.label.unlink()
    return masks


def test_dicom_seg_labels_give_the_masks_the_nifti_labels_gave(tmp_path):
    root = make_dicom(tmp_path, n=3)
    masks = _segs_for_labels(root)
    seg = build_dataset("dicom", root, labels=["organ", "tumour"], empty_slices="all")
    assert seg.ids == list(masks) and seg.classes == ("organ", "tumour")
    assert sum(int(m.max() == 2) for m in masks.values()) == 3  # the tumour slice of each case
    for i, info in enumerate(seg.samples):
        np.testing.assert_array_equal(seg.load(i).mask, masks[info.id])
    (root / "dataset.json").unlink()  # the SEG's own segment labels name the classes
    named = build_dataset("dicom", root, labels=["tumour"], empty_slices="none")
    assert named.classes == ("tumour",) and [s.meta["slice"] for s in named.samples][:1] == [2]


def test_a_seg_segment_dataset_json_does_not_name_is_refused(tmp_path):
    root = make_dicom(tmp_path, n=3)
    _segs_for_labels(root, names=("organ", "lesion"))
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ",
                                                              "2": "tumour"}}))
    with pytest.raises(DatasetError, match=r"case_0.dcm: segment 2 'lesion' is not a label of dataset.json"):
        build_dataset("dicom", root)
