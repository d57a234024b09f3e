"""The teacher's compute dtype is part of the recipe: in the entry key, in provenance, in `info`;
float32 keeps the keys entries had before it was recorded, and those entries still read."""

import hashlib

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.errors import ConfigError
from featcache.extract.runner import extract, extraction_key
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore, entry_key
from tests.extract.helpers import count_forwards, write_folder


def test_the_key_changes_with_the_compute_dtype(blobs, tiny_teacher):
    keys = {dtype: extraction_key(blobs, tiny_teacher, ["fine"], ExtractSettings(compute_dtype=dtype))[0]
            for dtype in ("float32", "tf32", "bfloat16", "float16")}
    assert len(set(keys.values())) == 4
    # float32: the recipe as it was before the compute dtype was recorded, so old entries keep keys
    s = ExtractSettings()
    recipe = f"{tiny_teacher.fingerprint(['fine'])}:{s.split}:{s.views}:{s.view_seed}:{s.precision}"
    digest = hashlib.sha256(recipe.encode()).hexdigest()
    old = entry_key(blobs.name, blobs.fingerprint(), tiny_teacher.name, digest)
    assert keys["float32"] == old


def test_bfloat16_entry_is_its_own_and_records_it(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    full = extract(blobs, tiny_teacher, store, ExtractSettings(shard_size=5))
    half = extract(blobs, tiny_teacher, store, ExtractSettings(shard_size=5, compute_dtype="bfloat16"))
    assert half.status == "extracted" and half.key != full.key  # no cache hit across precisions
    a, b = store.open(full.key), store.open(half.key)
    assert a.meta["compute"] == {"dtype": "float32", "device": "cpu"}
    assert b.meta["compute"] == {"dtype": "bfloat16", "device": "cpu"}
    fine_a, fine_b = a.read(0, "fine"), b.read(0, "fine")
    assert not np.array_equal(fine_a, fine_b)  # bfloat16 keeps 8 mantissa bits
    np.testing.assert_allclose(fine_b, fine_a, rtol=0.05, atol=0.02)


def test_tf32_on_the_cpu_is_refused_before_anything_is_written(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    with pytest.raises(ConfigError, match="compute_dtype tf32 is a CUDA") as caught:
        extract(blobs, tiny_teacher, store, ExtractSettings(compute_dtype="tf32"))
    assert caught.value.fields == ("compute_dtype",) and store.entries() == []
    with pytest.raises(ConfigError, match="compute_dtype 'half': use one of float32, tf32"):
        ExtractSettings(compute_dtype="half")


def test_an_entry_from_before_is_a_cache_hit_and_info_says_not_recorded(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    key = extract(blobs, tiny_teacher, store, ExtractSettings(shard_size=5)).key
    group = store.root[key]
    meta = dict(group.attrs["featcache"])
    meta.pop("compute")  # as entries written before this field existed
    group.attrs["featcache"] = meta
    calls = count_forwards(tiny_teacher)
    again = extract(blobs, tiny_teacher, store, ExtractSettings(shard_size=5))
    assert again.status == "cached" and again.key == key and calls == []
    assert store.open(key).read(0, "fine").shape == (1, 8, 16, 16)
    out = CliRunner().invoke(app, ["info", key, "--store", str(tmp_path / "s")], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "compute dtype: not recorded" in out.output


def test_cli_records_the_compute_dtype_and_info_shows_it(tmp_path):
    root = write_folder(tmp_path / "data", n=3, size=16)
    args = ["extract", "--teacher", "timm", "--arch", "resnet18", "--random-init", "--dataset", "folder",
            "--root", str(root), "--store", str(tmp_path / "s"), "--device", "cpu", "--batch-size", "3"]
    env = {"FEATCACHE_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    bad = CliRunner().invoke(app, [*args, "--compute-dtype", "half"], env=env)
    assert bad.exit_code == 1 and "--compute-dtype 'half'" in bad.output
    done = CliRunner().invoke(app, [*args, "--compute-dtype", "bfloat16"], env=env)
    assert done.exit_code == 0, done.output
    key = FeatureStore(tmp_path / "s").entries()[0]
    out = CliRunner().invoke(app, ["info", key, "--store", str(tmp_path / "s")], env=env)
    assert "compute dtype: bfloat16 (teacher on cpu)" in out.output
