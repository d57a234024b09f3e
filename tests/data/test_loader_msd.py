"""The `msd` loader on a tiny synthetic Decathlon task (5 volumes of 16 x 18 x 10 voxels)."""

import json

import nibabel as nib
import numpy as np
import pytest

from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from tests.data.synth_layouts import make_msd

FG = [2, 3, 4]  # slices (axis 2) holding label 1; label 2 only in slice 3


def _by_volume(ds):
    out = {}
    for s in ds.samples:
        out.setdefault(s.meta["volume"], []).append(s.meta["slice"])
    return out


def test_ids_spacing_modality_and_split_by_volume(tmp_path):
    ds = build_dataset("msd", make_msd(tmp_path, n=6))
    assert ds.modality == "CT" and ds.channels == 1
    info = ds.samples[0]
    assert info.id == "case_0_s0002" and info.group == "case_0"
    assert info.meta["spacing"] == pytest.approx([0.8, 0.7]) and info.meta["task"] == "Tiny"
    splits = {}
    for s in ds.samples:
        splits.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in splits.values())  # a volume never straddles splits
    assert {next(iter(v)) for v in splits.values()} == {"train", "val", "test"}
    again = build_dataset("msd", make_msd(tmp_path / "copy", n=6))
    assert [(s.id, s.split) for s in again.samples] == [(s.id, s.split) for s in ds.samples]


def test_balanced_policy_keeps_foreground_plus_as_many_empty_slices(tmp_path):
    root = make_msd(tmp_path)
    ds = build_dataset("msd", root, seed=1)
    for slices in _by_volume(ds).values():
        assert set(FG) <= set(slices) and len(slices) == 2 * len(FG)
    assert sum(not s.meta["foreground"] for s in ds.samples) == 3 * 5
    assert _by_volume(build_dataset("msd", root, seed=1)) == _by_volume(ds)
    assert _by_volume(build_dataset("msd", root, seed=2)) != _by_volume(ds)


@pytest.mark.parametrize("policy,per_volume", [("all", 10), ("none", 3), (0.5, 3 + 4), (0.0, 3)])
def test_other_empty_slice_policies(tmp_path, policy, per_volume):
    ds = build_dataset("msd", make_msd(tmp_path), empty_slices=policy)
    assert all(len(v) == per_volume for v in _by_volume(ds).values())


def test_label_selection_by_value_name_and_list(tmp_path):
    root = make_msd(tmp_path)
    tumour = build_dataset("msd", root, labels="tumour", empty_slices="none")
    assert [s.meta["slice"] for s in tumour.samples if s.group == "case_0"] == [3]
    assert tumour.load(0).mask.sum() == 4
    organ = build_dataset("msd", root, labels=1, empty_slices="none")
    i = organ.index_of("case_0_s0003")
    assert organ.load(i).mask.sum() == 6 * 7 - 4  # label 2 punched out of label 1
    both = build_dataset("msd", root, labels=[[1, "tumour"]], empty_slices="none")  # one class
    assert both.load(both.index_of("case_0_s0003")).mask.sum() == 6 * 7
    assert both.classes == ("organ+tumour",) and both.options["labels"] == [1, 2]
    assert organ.classes == ("organ",) and build_dataset("msd", root).classes == ("foreground",)
    with pytest.raises(DatasetError, match="unknown label 'liver'; known: 0=background, 1=organ"):
        build_dataset("msd", root, labels="liver")


def test_ct_window_and_explicit_window(tmp_path):
    root = make_msd(tmp_path)
    ds = build_dataset("msd", root, empty_slices="all")
    raw = np.asarray(nib.load(root / "imagesTr" / "case_0.nii.gz").dataobj)[:, :, 5].astype(np.float32)
    expected = np.clip((raw + 160) / 400, 0, 1)
    assert np.allclose(ds.load(ds.index_of("case_0_s0005")).image[:, :, 0], expected, atol=1e-6)
    assert ds.options["window"] == [-160.0, 240.0]
    wide = build_dataset("msd", root, empty_slices="all", window=[-1000, 1000])
    img = wide.load(wide.index_of("case_0_s0005")).image[:, :, 0]
    assert np.allclose(img, (raw + 1000) / 2000, atol=1e-6)


def test_mri_4d_channel_choice_and_percentile_scaling(tmp_path):
    root = make_msd(tmp_path, modality={"0": "FLAIR", "1": "T1w"})
    ds = build_dataset("msd", root, channel=1)
    assert ds.modality == "T1w" and ds.samples[0].meta["modality"] == "T1w"
    vol = np.asarray(nib.load(root / "imagesTr" / "case_0.nii.gz").dataobj)[..., 1].astype(np.float32)
    lo, hi = np.percentile(vol[vol != 0], [1, 99])
    k = ds.samples[0].meta["slice"]
    assert np.allclose(ds.load(0).image[:, :, 0], np.clip((vol[:, :, k] - lo) / (hi - lo), 0, 1), atol=1e-5)
    with pytest.raises(DatasetError, match="channel must be 0..1"):
        build_dataset("msd", root, channel=2)


def test_axis_option_slices_along_another_axis(tmp_path):
    ds = build_dataset("msd", make_msd(tmp_path), axis=0, empty_slices="none")
    s = ds.load(0)
    assert s.image.shape == (18, 10, 1)
    assert ds.samples[0].meta["spacing"] == pytest.approx([0.7, 2.5])
    assert sorted({x.meta["slice"] for x in ds.samples}) == list(range(4, 10))


def test_nnunet_v2_dataset_json_is_read(tmp_path):
    root = make_msd(tmp_path)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},
                                                   "labels": {"background": 0, "organ": 1, "tumour": 2}}))
    ds = build_dataset("msd", root, labels="organ")
    assert ds.modality == "CT" and ds.options["labels"] == [1]


def test_pickles_for_worker_processes_and_caches_volumes(tmp_path, monkeypatch):
    import pickle

    import featcache.data.loaders.msd as msd

    ds = build_dataset("msd", make_msd(tmp_path, n=3))
    decoded = []
    real = msd.load_volume
    monkeypatch.setattr(msd, "load_volume", lambda v, c: decoded.append(v.id) or real(v, c))
    for i in range(len(ds)):
        ds.load(i)
    assert decoded == ["case_0", "case_1", "case_2"]  # in order: each case decoded once
    ds.max_cached_volumes = 3
    for i in reversed(range(len(ds))):
        ds.load(i)
    assert len(decoded) == 5  # case_2 still cached; case_1, case_0 decoded again, then all kept
    copy = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(copy.load(0).mask, ds.load(0).mask)


def test_a_list_of_labels_keeps_them_as_classes_in_its_order(tmp_path):
    root = make_msd(tmp_path)
    ds = build_dataset("msd", root, labels=["tumour", "organ"], empty_slices="none")
    assert ds.classes == ("tumour", "organ") and ds.options["labels"] == [[2], [1]]
    mask = ds.load(ds.index_of("case_0_s0003")).mask
    assert mask.dtype == np.uint8 and sorted(np.unique(mask)) == [0, 1, 2]
    assert (mask == 1).sum() == 4 and (mask == 2).sum() == 6 * 7 - 4  # tumour = 1, organ = 2
    assert ds.describe()["classes"] == ["tumour", "organ"]
    # Same slices as the binary union (foreground = any class), other masks, other fingerprint.
    union = build_dataset("msd", root, labels=[[1, 2]], empty_slices="none")
    assert union.ids == ds.ids and union.fingerprint() != ds.fingerprint()


def test_bad_label_lists_are_one_line(tmp_path):
    root = make_msd(tmp_path)
    with pytest.raises(DatasetError, match=r"label 1 is in two classes"):
        build_dataset("msd", root, labels=["organ", [1, 2]])
    with pytest.raises(DatasetError, match=r"labels must name foreground classes"):
        build_dataset("msd", root, labels=["background", "organ"])
    with pytest.raises(DatasetError, match=r"labels must name foreground classes"):
        build_dataset("msd", root, labels=[[], "organ"])
