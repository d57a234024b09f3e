"""Every user mistake that would otherwise surface mid-training fails in Trainer(...) first, with
one line naming the entry, level, stage, sample or split at fault."""

import pytest

from featcache.distill.trainer import Trainer
from featcache.errors import ConfigError, DatasetError, FeatcacheError, StoreError
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.manifest import manifest_from_dict
from featcache.store import FeatureStore
from tests.conftest import BlobDataset, TinyTeacher
from tests.distill.conftest import TINY_STUDENT, make_manifest


def _fails(manifest, error, *words):
    with pytest.raises(error) as info:
        Trainer(manifest)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, FeatcacheError)
    for word in words:
        assert word in message, message
    return message


def _key(store, teacher):
    return next(k for k in store.entries() if store.open(k).meta["teacher"]["name"] == teacher)


def test_incomplete_entry(tmp_path, blob_registry):
    store = FeatureStore(tmp_path / "store")

    def die(*args):
        raise KeyboardInterrupt  # extraction killed after its first batch

    with pytest.raises(KeyboardInterrupt):
        extract(BlobDataset(), TinyTeacher(), store, ExtractSettings(views=1, shard_size=4, batch_size=4),
                progress=die)
    manifest = make_manifest(store, tmp_path / "run", teachers=[{"name": "tiny", "levels": {"fine": "dec3"}}])
    _fails(manifest, StoreError, "incomplete", "re-run the same `featcache extract`")
    explicit = make_manifest(store, tmp_path / "run", teachers=[
        {"name": "tiny", "entry": store.entries()[0], "levels": {"fine": "dec3"}}])
    _fails(explicit, StoreError, store.entries()[0], "incomplete")


@pytest.mark.parametrize("explicit", [False, True])
def test_levels_not_in_the_entry(cached_store, tmp_path, explicit):
    spec = {"name": "tiny", "levels": {"middle": "dec3"}}
    if explicit:
        spec["entry"] = _key(cached_store, "tiny")
    manifest = make_manifest(cached_store, tmp_path / "run", teachers=[spec])
    _fails(manifest, StoreError, "middle", "fine", "coarse", _key(cached_store, "tiny"))


def test_entry_from_different_data(cached_store, tmp_path):
    key = _key(cached_store, "tiny")
    manifest = make_manifest(cached_store, tmp_path / "run",
                             datasets=[{"name": "blobs", "options": {"seed": 1}}],
                             teachers=[{"name": "tiny", "entry": key, "levels": {"fine": "dec3"}}])
    _fails(manifest, StoreError, key, "different data", "fingerprint")


def test_entry_lacking_validation_samples(tmp_path, blob_registry):
    store = FeatureStore(tmp_path / "store")
    extract(BlobDataset(), TinyTeacher(), store, ExtractSettings(views=1, shard_size=4, split="train"))
    manifest = make_manifest(store, tmp_path / "run", teachers=[{"name": "tiny", "levels": {"fine": "dec3"}}])
    _fails(manifest, StoreError, "val sample", "--split all")


def test_a_whole_dataset_entry_is_chosen_beside_a_split_one(tmp_path, blob_registry):
    store = FeatureStore(tmp_path / "store")
    split = extract(BlobDataset(), TinyTeacher(), store,
                    ExtractSettings(views=1, shard_size=4, split="train"))
    whole = extract(BlobDataset(), TinyTeacher(), store, ExtractSettings(views=1, shard_size=4))
    assert split.key != whole.key
    manifest = make_manifest(store, tmp_path / "run", teachers=[{"name": "tiny", "levels": {"fine": "dec3"}}])
    trainer = Trainer(manifest)
    try:
        assert trainer.data.sources[0].entries["tiny"].key == whole.key
    finally:
        trainer.close()
    extract(BlobDataset(), TinyTeacher(), store, ExtractSettings(views=2, shard_size=4))  # a second whole one
    _fails(manifest, ConfigError, "several entries fit", "entry:")


def test_unknown_student_stage(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run",
                             teachers=[{"name": "tiny", "levels": {"fine": "dec9"}}])
    _fails(manifest, ConfigError, "teachers.tiny.levels.fine", "dec9", "dec3")


def test_too_few_samples(tmp_path, blob_registry):
    manifest = manifest_from_dict({"run_dir": str(tmp_path / "r"), "datasets": [
        {"name": "blobs", "options": {"n": 10}, "val_split": "train"}], "student": TINY_STUDENT,
        "distill": {"enabled": False}, "training": {"train_fraction": 0.1}}, "t")
    _fails(manifest, DatasetError, "too few samples", "1 training items")
    no_val = manifest_from_dict({"run_dir": str(tmp_path / "r"), "datasets": [
        {"name": "blobs", "options": {"n": 2}}], "student": TINY_STUDENT,
        "distill": {"enabled": False}}, "t")
    _fails(no_val, DatasetError, "blobs", "has no samples")
