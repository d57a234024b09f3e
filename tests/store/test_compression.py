"""Compression options: blosc (default), zstd, none; entries written before the option still read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.errors import CorruptEntryError, StoreError
from featcache.store import EntryReader, FeatureStore, verify_entry
from featcache.store.fastread import LevelFastPath
from featcache.store.precision import decode
from tests.extract.helpers import write_folder
from tests.store.storehelpers import ATTRS, KEY, expected, fill, make_layout, shard_data, stats_for, write_all


def _inner_codecs(store_dir, level: str = "fine") -> list[dict]:
    meta = json.loads((store_dir / KEY / "levels" / level / "zarr.json").read_text())
    return meta["codecs"][0]["configuration"]["codecs"]


@pytest.mark.parametrize("compression", ["blosc", "zstd", "none"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "fp16-br7", "int8"])
def test_roundtrip_bitwise_on_both_paths(tmp_path, compression, precision):
    store = FeatureStore(tmp_path / "store")
    fill(store, precision=precision, n=5, compression=compression)
    names = [c["name"] for c in _inner_codecs(tmp_path / "store")]
    assert names == ["bytes", *([compression] if compression != "none" else []), "crc32c"]
    fast = store.open(KEY)
    slow = EntryReader(store.root[KEY], KEY, fast_path=False)
    assert fast.layout.compression == compression and isinstance(fast._sample_reader("fine"), LevelFastPath)
    lossless = precision == "fp32"
    for i in range(5):
        for level in ("fine", "coarse"):
            a, b = fast.read(i, level), slow.read(i, level)
            assert a.dtype == b.dtype == np.float32
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))  # bitwise, not just close
            np.testing.assert_array_equal(fast.read(i, level, view=1), b[1])
            if lossless:
                np.testing.assert_array_equal(a, expected(fast.layout, i, level))
    for reader in (fast, slow):  # read_many decodes into its batch: the same bits as read
        for view in (None, 1):
            many = reader.read_many([4, 0, 2], "fine", view)
            alone = np.stack([reader.read(i, "fine", view) for i in (4, 0, 2)])
            assert np.array_equal(many.view(np.uint32), alone.view(np.uint32))


def test_blosc_records_the_element_size(tmp_path):
    fill(FeatureStore(tmp_path / "store"))  # default: blosc, fp16
    blosc = _inner_codecs(tmp_path / "store")[1]
    assert blosc["name"] == "blosc"
    assert blosc["configuration"] == {"typesize": 2, "cname": "lz4", "clevel": 5, "shuffle": "bitshuffle",
                                      "blocksize": 0}


@pytest.mark.parametrize("where", ["header", "body"])
def test_flipped_byte_in_blosc_chunk_is_named(tmp_path, where):
    store = FeatureStore(tmp_path / "store")
    fill(store, compression="blosc")
    shard = tmp_path / "store" / KEY / "levels" / "fine" / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    # the shard index (4 chunks: sample x view, then a crc32c) says where case02's view 1 lies
    offset, nbytes = np.frombuffer(bytes(data[-4 * 16 - 4:-4]), "<u8").reshape(4, 2)[1]
    assert data[offset] == 2  # blosc format version: this is a blosc chunk
    data[int(offset) + (5 if where == "header" else 16 + (int(nbytes) - 20) // 2)] ^= 0x04
    shard.write_bytes(bytes(data))
    for reader in (store.open(KEY), EntryReader(store.root[KEY], KEY, fast_path=False)):
        with pytest.raises(CorruptEntryError, match="sample case02 level fine"):
            reader.read(2, "fine")
    report = verify_entry(store.open(KEY), store.backend)
    assert not report.ok and report.bad_ids == ["case02"]
    assert {b.what for b in report.bad_samples} == {"fine"}


def _drop_compression_key(store: FeatureStore) -> None:
    """What a writer from before the option left: a layout dict without "compression"."""
    group = store.root[KEY]
    meta = dict(group.attrs["featcache"])
    meta["layout"] = {k: v for k, v in meta["layout"].items() if k != "compression"}
    group.attrs["featcache"] = meta


def test_entries_without_compression_key_read_as_zstd(tmp_path):
    store = FeatureStore(tmp_path / "store")
    fill(store, precision="fp16", compression="zstd")
    _drop_compression_key(store)
    fast = FeatureStore(tmp_path / "store", read_only=True).open(KEY)
    slow = EntryReader(fast.group, KEY, fast_path=False)
    assert fast.layout.compression == "zstd" and fast._sample_reader("fine").codec == "zstd"
    for i in range(6):
        np.testing.assert_array_equal(fast.read(i, "fine"), slow.read(i, "fine"))
        np.testing.assert_allclose(fast.read(i, "fine"), expected(fast.layout, i, "fine"), rtol=1e-3)
    assert verify_entry(store.open(KEY), store.backend).ok


def test_old_zstd_entry_resumes_with_its_own_codec(tmp_path):
    """A partial entry from before blosc was the default resumes under the default layout."""
    store = FeatureStore(tmp_path / "store")
    old = store.create_entry(KEY, make_layout(compression="zstd"), ATTRS)
    old.write_shard(0, *shard_data(old.layout, 0))
    _drop_compression_key(store)
    writer = store.create_entry(KEY, make_layout(), ATTRS)  # default: blosc
    assert writer.layout.compression == "zstd" and writer.missing_shards() == [1, 2]
    write_all(writer)
    writer.finalize(stats_for(writer.layout), {})
    reader = store.open(KEY)
    assert "compression" not in reader.meta["layout"] and reader.layout.compression == "zstd"
    assert [c["name"] for c in _inner_codecs(tmp_path / "store")] == ["bytes", "zstd", "crc32c"]
    for i in range(6):
        np.testing.assert_allclose(reader.read(i, "fine"), expected(reader.layout, i, "fine"), rtol=1e-3)
    with pytest.raises(StoreError, match="different layout"):  # a real layout change is still refused
        store.create_entry(KEY, make_layout(precision="fp32"), ATTRS)


def test_unknown_compression_is_refused_before_writing(tmp_path):
    store = FeatureStore(tmp_path / "store")
    with pytest.raises(StoreError, match="unknown compression 'lz9'; use one of blosc, zstd, none"):
        store.create_entry(KEY, make_layout(compression="lz9"), ATTRS)
    assert store.entries() == []


def _extract_args(tmp_path, *extra: str) -> list[str]:
    root = write_folder(tmp_path / "data", n=3, size=16)
    return ["extract", "--teacher", "timm", "--arch", "resnet18", "--random-init", "--dataset", "folder",
            "--root", str(root), "--store", str(tmp_path / "s"), "--device", "cpu", "--batch-size", "3",
            *extra]


def test_cli_compression_option(tmp_path):
    env = {"FEATCACHE_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    res = CliRunner().invoke(app, _extract_args(tmp_path, "--compression", "none"), env=env)
    assert res.exit_code == 0, res.output
    store = FeatureStore(tmp_path / "s")
    (key,) = store.entries()
    reader = store.open(key)
    level = reader.layout.levels[0].name
    assert reader.layout.compression == "none" and reader._sample_reader(level).codec is None
    # compression is lossless and not part of the key: another codec is the same cache entry
    again = CliRunner().invoke(app, _extract_args(tmp_path, "--compression", "zstd"), env=env)
    assert again.exit_code == 0 and "cache hit" in again.output and store.entries() == [key]


def test_cli_unknown_compression_is_one_line(tmp_path):
    res = CliRunner().invoke(app, _extract_args(tmp_path, "--compression", "lz9"), env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown compression 'lz9'; use one of blosc, zstd, none" in lines[0]
    assert not (tmp_path / "s").exists()


def test_cli_help_lists_precisions_and_compressions():
    out = CliRunner().invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output
    for word in ("--compression", "blosc", "zstd", "int8", "fp16-br"):
        assert word in out


def test_decode_is_bitwise_numpy_across_blocks():
    """torch converts in blocks (precision._BLOCK); sizes that are not a multiple of it, specials,
    read-only inputs and `out` all give numpy's exact float32 bits."""
    rng = np.random.default_rng(3)
    half = (rng.standard_normal((1, 3, 105, 313)) * 100).astype(np.float16)  # 98,595 elements
    half.flat[:7] = [np.inf, -np.inf, np.nan, 6e-8, -0.0, 65504, -65504]
    half.flags.writeable = False
    want = half.astype(np.float32)
    got = decode(half, None, None)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))
    q = rng.integers(0, 256, (2, 3, 105, 313)).astype(np.uint8)
    scale = rng.random((2, 3)).astype(np.float32)
    offset = rng.standard_normal((2, 3)).astype(np.float32)
    want = q.astype(np.float32) * scale[..., None, None] + offset[..., None, None]
    out = np.full(q.shape, np.nan, np.float32)
    assert decode(q, scale, offset, out=out) is out
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))


def test_fp16_encoding_rounds_exactly_as_numpy():
    """Stored bytes must not depend on how the conversion is computed: ties, subnormals and the
    largest values round as numpy's astype rounds them."""
    import torch

    from featcache.store.encoding import encode_tensor
    from featcache.store.precision import parse_precision

    halves = np.arange(0, 0x7BFF, 97, dtype=np.uint16).view(np.float16).astype(np.float64)
    ties = ((halves[:-1] + halves[1:]) / 2).astype(np.float32)
    rng = np.random.default_rng(0)
    values = np.concatenate([ties, np.nextafter(ties, np.float32(0)), np.nextafter(ties, np.float32(1e9)),
                             rng.standard_normal(5000).astype(np.float32) * 10.0 ** rng.integers(-8, 4, 5000),
                             np.float32([65504, 65519.99, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 0.0, -0.0])])
    values = np.concatenate([values, -values]).reshape(1, 1, 1, 1, -1)
    stored, _, _ = encode_tensor(torch.from_numpy(values), parse_precision("fp16"))
    stored = stored.numpy()
    assert stored.dtype == np.float16
    assert np.array_equal(stored.view(np.uint16), values.astype(np.float16).view(np.uint16))
