"""Sample ids from any Unicode file name: distinct, stable, path-safe; a collision names both files."""

import unicodedata

import pytest

from featcache.data.base import check_sample_id, safe_id
from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from tests.extract.helpers import write_folder


def test_non_ascii_names_give_distinct_stable_ids():
    names = ["日本", "画像", "café", "cafë", "Ωmega (1)", "ñ", "n"]
    ids = [safe_id(n) for n in names]
    assert len(set(ids)) == len(ids), ids
    for i in ids:
        assert check_sample_id(i) == i
    assert safe_id("日本") == safe_id("日本")  # stable: a pure function of the name
    # the same name stored decomposed (macOS) or composed (Linux) is the same sample
    assert safe_id(unicodedata.normalize("NFD", "café")) == safe_id("café")
    assert safe_id("café").startswith("caf_")
    assert safe_id("benign (12)") == "benign_12"  # ASCII names keep the ids they always had


def test_folder_dataset_with_non_ascii_file_names(tmp_path):
    root = write_folder(tmp_path / "data", n=4)
    for new in ("日本", "画像"):
        old = sorted((root / "images").glob("case0*.png"))[0].stem
        for sub in ("images", "masks"):
            (root / sub / f"{old}.png").rename(root / sub / f"{new}.png")
    data = build_dataset("folder", root)
    assert len(set(data.ids)) == 4 and "sample" not in data.ids


def test_colliding_ids_name_both_files(tmp_path):
    root = write_folder(tmp_path / "data", n=2)
    for old, new in (("case00", "a b"), ("case01", "a_b")):
        for sub in ("images", "masks"):
            (root / sub / f"{old}.png").rename(root / sub / f"{new}.png")
    with pytest.raises(DatasetError) as info:
        build_dataset("folder", root)
    message = str(info.value)
    assert "a b.png" in message and "a_b.png" in message and "'a_b'" in message, message
