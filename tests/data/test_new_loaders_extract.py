"""The new kinds of dataset go through extraction unchanged: a classification dataset (all-zero
masks, labels in the metadata), a multi-class nnU-Net dataset and DICOM series fill a store entry,
and the entry's provenance says the task and the classes."""

import pytest

import featcache
from featcache.data.registry import build_dataset
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.data.synth_layouts import make_dicom, make_isic, make_nnunet_png


@pytest.mark.parametrize("name, make, task, classes", [
    ("isic2017", make_isic, "classification", ["melanoma", "seborrheic_keratosis", "nevus"]),
    ("nnunet", make_nnunet_png, "segmentation", ["road", "car"]),
    ("dicom", make_dicom, "segmentation", ["foreground"]),
])
def test_extract_a_new_kind_of_dataset(tmp_path, tiny_teacher, name, make, task, classes):
    dataset = build_dataset(name, make(tmp_path / "data"))
    store = FeatureStore(tmp_path / "store")
    result = extract(dataset, tiny_teacher, store, ExtractSettings(shard_size=4, batch_size=2))
    assert result.status == "extracted"
    reader = store.open(result.key)
    assert reader.ids == tuple(dataset.ids)
    assert reader.read(0, "fine").shape[-3:] == (8, 16, 16)
    described = featcache.open_store(str(tmp_path / "store")).find(dataset=name)[0].provenance["dataset"]
    assert described["task"] == task and described["classes"] == classes
    again = extract(dataset, tiny_teacher, store, ExtractSettings(shard_size=4, batch_size=2))
    assert again.status == "cached" and again.key == result.key
