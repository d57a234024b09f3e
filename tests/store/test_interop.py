"""FORMAT.md is enough: plain zarr and tensorstore read the same numbers featcache does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from featcache.store import FeatureStore
from tests.store.storehelpers import KEY, fill

PLAIN_ZARR = textwrap.dedent("""
    import json, sys
    import numpy as np, zarr
    root = zarr.open_group(sys.argv[1], mode="r")
    entry = root[sys.argv[2]]
    meta = entry.attrs["featcache"]
    lay = meta["layout"]
    out = {}
    for i, sid in enumerate(meta["sample_ids"]):
        assert entry["committed"][i // lay["shard_size"]] == 1
        for lv in lay["levels"]:
            name = lv["name"]
            q = entry["levels/" + name][i]
            if lay["precision"] == "int8":
                x = (q.astype(np.float32) * entry["levels/" + name + "__scale"][i][..., None, None]
                     + entry["levels/" + name + "__offset"][i][..., None, None])
            else:
                x = q.astype(np.float32)
            out[sid + "/" + name] = x.tolist()
        out[sid + "/frames"] = entry["frames"][i].tolist()
    assert "featcache" not in sys.modules
    print(json.dumps(out))
""")


@pytest.mark.parametrize("precision", ["fp16", "int8", "fp16-br5"])
def test_plain_zarr_reads_same_numbers(tmp_path, precision):
    fill(FeatureStore(tmp_path / "store"), precision=precision)
    script = tmp_path / "read_plain.py"
    script.write_text(PLAIN_ZARR)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), KEY],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    plain = json.loads(run.stdout)
    reader = FeatureStore(tmp_path / "store", read_only=True).open(KEY)
    for i, sid in enumerate(reader.ids):
        for level in reader.levels:
            np.testing.assert_array_equal(np.asarray(plain[f"{sid}/{level}"], np.float32),
                                          reader.read(i, level))
        np.testing.assert_array_equal(np.asarray(plain[f"{sid}/frames"], np.float32), reader.frames(i))


def test_tensorstore_reads_same_numbers(tmp_path):
    ts = pytest.importorskip("tensorstore")
    fill(FeatureStore(tmp_path / "store"))
    reader = FeatureStore(tmp_path / "store", read_only=True).open(KEY)
    for level in reader.levels:
        arr = ts.open({"driver": "zarr3", "kvstore": f"file://{tmp_path}/store/{KEY}/levels/{level}"},
                      open=True, read=True).result()
        for i in (0, 5):
            np.testing.assert_array_equal(np.asarray(arr[i].read().result(), np.float32),
                                          reader.read(i, level))
