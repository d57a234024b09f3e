"""The direct level-shard writer (shardwrite.py) writes zarr's own bytes, and plain zarr reads them."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.core.indexing import morton_order_iter

from featcache.store import EntryLayout, FeatureStore, LevelLayout
from featcache.store.integrity import chunk_crcs
from featcache.store.shardwrite import encode_shard, morton_order
from featcache.store.writer import _codecs
from tests.store.storehelpers import ATTRS, KEY, make_layout, write_all


@pytest.mark.parametrize("shape", [(16, 1, 1, 1, 1), (4, 2, 1, 1, 1), (5, 3, 1, 1, 1), (7, 1, 2, 1, 1),
                                   (1, 1, 1, 1, 1), (3, 6, 1, 1, 1)])
def test_morton_order_is_zarrs(shape):
    assert list(morton_order(shape)) == list(morton_order_iter(shape))


def _level_array(root: zarr.Group, name: str, compression: str, dtype: str, n: int, v: int, s: int):
    full = (3, 5, 4)
    return root.create_array(name, shape=(n, v, *full), chunks=(1, 1, *full), shards=(s, v, *full),
                             dtype=dtype, fill_value=0, compressors=_codecs(compression, dtype),
                             config={"write_empty_chunks": True})


@pytest.mark.parametrize("compression", ["blosc", "zstd", "none"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "uint8"])
@pytest.mark.parametrize(("n", "v", "s"), [(8, 1, 4), (7, 3, 4), (5, 2, 3)])  # last shard short
@pytest.mark.parametrize("threads", [1, 3])
def test_direct_shard_bytes_equal_zarrs_and_read_back(tmp_path, compression, dtype, n, v, s, threads):
    rng = np.random.default_rng(n * 100 + v)
    data = (rng.standard_normal((n, v, 3, 5, 4)) * 20).astype(dtype)
    data[0, 0] = 0  # an all-fill chunk is written too
    root = zarr.open_group(str(tmp_path / "z"), mode="w")
    ref = _level_array(root, "ref", compression, dtype, n, v, s)
    ref[:] = data
    mine = _level_array(root, "mine", compression, dtype, n, v, s)
    for shard in range(-(-n // s)):
        rows = data[shard * s:(shard + 1) * s]
        enc = encode_shard(mine, rows, threads=threads)
        blob = b"".join(bytes(p) for p in enc.parts)
        assert len(blob) == enc.nbytes
        zarrs = (tmp_path / "z" / "ref" / "c" / str(shard) / "0" / "0" / "0" / "0").read_bytes()
        assert blob == zarrs, f"shard {shard}"
        np.testing.assert_array_equal(enc.chunk_crcs, chunk_crcs(blob, len(rows), v, s * v))
        path = tmp_path / "z" / "mine" / "c" / str(shard) / "0" / "0" / "0"
        path.mkdir(parents=True, exist_ok=True)
        (path / "0").write_bytes(blob)
    back = zarr.open_group(str(tmp_path / "z"), mode="r")["mine"]
    np.testing.assert_array_equal(back[:], data)


def test_other_encodings_are_left_to_zarr(tmp_path):
    root = zarr.open_group(str(tmp_path / "z"), mode="w")
    plain = root.create_array("plain", shape=(4, 1, 2, 2, 2), chunks=(2, 1, 2, 2, 2), dtype="float16")
    assert encode_shard(plain, np.zeros((2, 1, 2, 2, 2), np.float16)) is None


@pytest.mark.parametrize("compression", ["blosc", "none"])
def test_an_entry_written_directly_equals_one_written_through_zarr(tmp_path, monkeypatch, compression):
    """Every object of the entry, levels, checksum record and commit markers included."""
    import featcache.store.writer as writer_module

    def objects(store):
        root = tmp_path / store
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and "claims" not in p.parts and p.name != "zarr.json"}

    for name, direct in (("direct", True), ("zarr", False)):
        if not direct:
            monkeypatch.setattr(writer_module, "encode_shard", lambda *a, **k: None)
        store = FeatureStore(tmp_path / name)
        writer = store.create_entry(KEY, make_layout(n=5, shard=2, compression=compression), ATTRS)
        write_all(writer)
    assert objects("direct") == objects("zarr")


def test_direct_entry_reads_back_through_plain_zarr(tmp_path):
    layout = EntryLayout(sample_ids=tuple(f"s{i}" for i in range(5)), views=1,
                         levels=(LevelLayout("emb", 3, 4, 4),), shard_size=4)
    store = FeatureStore(tmp_path / "s")
    writer = store.create_entry(KEY, layout, ATTRS)
    feats = np.random.default_rng(0).standard_normal((5, 1, 3, 4, 4)).astype(np.float32)
    for k in range(2):
        rows = slice(*layout.shard_range(k))
        writer.write_shard(k, {"emb": feats[rows]}, np.zeros((rows.stop - rows.start, 1, 4), np.float32),
                           np.zeros((rows.stop - rows.start, 1, 1), np.float32))
    plain = zarr.open_group(str(tmp_path / "s"), mode="r")[KEY]
    np.testing.assert_array_equal(plain["levels/emb"][:], feats.astype(np.float16))
