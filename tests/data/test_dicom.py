"""Reading DICOM series (featcache/data/dicom.py) on tiny series written with pydicom, and on the
series pydicom ships in its wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLossless, generate_uid

from featcache.data.dicom import read_folder, read_series, scan_folder
from featcache.data.files import FileProblem
from featcache.data.volumes import read_on_grid
from tests.data.synth_dicom import flip_rows, oblique_orientation, ramp_volume, ras_affine, write_series

SHAPE = (16, 12, 5)  # columns, rows, slices


def _series_of(folder: Path):
    found = scan_folder(folder)
    assert len(found.series) == 1
    return found.series[0]


def test_an_oblique_shuffled_ct_series_reads_in_position_order_as_hu(tmp_path):
    orientation = oblique_orientation(20, 15)
    values = ramp_volume(SHAPE) * 2  # even: exact under slope 2
    files = write_series(tmp_path / "ct", values, slope=2.0, intercept=-1024.0, orientation=orientation,
                         origin=(5.0, -7.5, 40.0), spacing=(0.7, 0.8, 2.5))
    assert sorted(p.name for p in files) != [p.name for p in files]  # name order is not slice order
    series = _series_of(tmp_path)
    assert series.files == tuple(str(p.resolve()) for p in files)
    assert series.shape == SHAPE and series.modality == "CT"
    np.testing.assert_array_equal(read_series(series), values.astype(np.float32))
    expected = ras_affine(orientation, (5.0, -7.5, 40.0), (0.7, 0.8, 2.5))
    np.testing.assert_allclose(series.affine_array, expected, atol=1e-5)
    assert series.spacing == pytest.approx((0.7, 0.8, 2.5), abs=1e-6)
    for k, path in enumerate(files):  # voxel (0, 0, k) is slice k's ImagePositionPatient, in RAS
        ds = pydicom.dcmread(path)
        lps = np.array([float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_allclose((series.affine_array @ [0, 0, k, 1])[:3], lps * [-1, -1, 1], atol=1e-5)
        assert series.sop_instance_uids[k] == ds.SOPInstanceUID
        assert series.study_uid == ds.StudyInstanceUID and series.series_uid == ds.SeriesInstanceUID


def test_an_mr_series_without_rescale_keeps_its_stored_values(tmp_path):
    values = np.abs(ramp_volume((8, 8, 3)))
    write_series(tmp_path / "mr", values, modality="MR", intercept=0.0)
    (series, volume), = read_folder(tmp_path)
    assert series.modality == "MR" and "RescaleSlope" not in pydicom.dcmread(series.files[0])
    np.testing.assert_array_equal(volume, values)


def test_series_are_grouped_by_uid_and_other_objects_are_listed(tmp_path):
    study = generate_uid()
    write_series(tmp_path / "a" / "deep", ramp_volume((8, 8, 4)), study_uid=study)
    write_series(tmp_path / "b", ramp_volume((8, 8, 2)), study_uid=study, seed=3)
    shutil.copy(pydicom.data.get_testdata_file("reportsi.dcm"), tmp_path / "b" / "report.dcm")
    (tmp_path / "DICOMDIR").write_bytes(b"not read")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    found = scan_folder(tmp_path)
    assert [s.shape[2] for s in found.series] == [4, 2]  # largest first
    assert {s.study_uid for s in found.series} == {study}
    assert found.other == ((str(tmp_path / "b" / "report.dcm"), "DICOM object without an image (SR)"),)


def _undecodable(path: Path) -> None:
    """Rewrite a slice as JPEG Lossless whose data no decoder can read."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3 not a jpeg \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def _break(kind: str, files: list[Path]) -> tuple[Path, str]:
    """Damage a 5-slice series one way -> (the file the error must name, words it must say)."""
    if kind == "not dicom":
        target = files[0].parent / "notes.txt"
        target.write_text("scanned at 3 pm")
        return target, "not a DICOM file (no DICM marker); move it out of the DICOM folder"
    ds = pydicom.dcmread(files[2])
    if kind == "mixed sizes":
        ds.set_pixel_data(np.zeros((6, 6), np.uint16), "MONOCHROME2", 16)
        ds.save_as(files[2])
        return files[2], "slice is 6x6 (columns x rows) but"
    if kind == "missing position":
        del ds.ImagePositionPatient
        ds.save_as(files[2])
        return files[2], "missing or malformed ImagePositionPatient"
    if kind == "gap":
        files[2].unlink()
        return files[3], "the series has a gap: 5.000 mm from"
    if kind == "duplicate":
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(files[2].with_name("copy.dcm"))
        return files[2].with_name("copy.dcm"), "lies at the same position as"
    _undecodable(files[2])
    return files[2], "compressed pixel data (JPEG Lossless, Non-Hierarchical (Process 14)) that pydicom " \
                     "cannot decode here"


@pytest.mark.parametrize("kind", ["not dicom", "mixed sizes", "missing position", "gap", "duplicate",
                                  "undecodable"])
def test_bad_input_is_one_line_naming_the_file_and_what_to_do(tmp_path, kind):
    files = write_series(tmp_path / "s", ramp_volume((8, 8, 5)))
    target, words = _break(kind, files)
    with pytest.raises(FileProblem) as caught:
        read_folder(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{target}: ") and words in message and "\n" not in message
    assert "; " in message.removeprefix(f"{target}: ")  # what to do follows what is wrong


def test_pydicoms_own_ct_series_reads_in_position_order():
    folder = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests/98892001/CT5N"
    (series, volume), = read_folder(folder)
    headers = [pydicom.dcmread(f) for f in series.files]
    heights = [float(h.ImagePositionPatient[2]) for h in headers]
    assert heights == sorted(heights) and len(heights) == 5  # the normal is +z for axial slices
    for k, h in enumerate(headers):
        expected = h.pixel_array.astype(np.float32) * float(h.RescaleSlope) + float(h.RescaleIntercept)
        np.testing.assert_array_equal(volume[:, :, k], expected.T)
    assert series.spacing[2] == pytest.approx(2.5)


@pytest.mark.parametrize("folder, file, words", [
    ("77654033/CT2", "17136", "the series has a gap: 202.500 mm from 17106"),
    ("98892003/MR2", "4981", "ImageOrientationPatient differs from 4950 of the same series"),
])
def test_pydicoms_own_broken_series_are_refused(folder, file, words):
    root = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / folder
    with pytest.raises(FileProblem, match=words) as caught:
        scan_folder(root)
    assert caught.value.path.endswith(file)


def test_a_label_stored_row_flipped_lies_back_on_the_series_grid(tmp_path):
    write_series(tmp_path / "s", ramp_volume(SHAPE), orientation=oblique_orientation())
    series = _series_of(tmp_path / "s")
    label = np.zeros(SHAPE, np.uint8)
    label[2:9, 3:5, 1:4] = 1
    data, affine = flip_rows(label, series.affine_array)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "label.nii.gz")
    np.testing.assert_array_equal(read_on_grid(tmp_path / "label.nii.gz", series.affine_array, SHAPE), label)
    shifted = affine.copy()
    shifted[:3, 3] += series.affine_array[:3, 0]  # one column over
    nib.save(nib.Nifti1Image(data, shifted), tmp_path / "off.nii.gz")
    with pytest.raises(FileProblem, match=r"off.nii.gz: label volume is not on its image's grid .*0.70 mm"):
        read_on_grid(tmp_path / "off.nii.gz", series.affine_array, SHAPE)
