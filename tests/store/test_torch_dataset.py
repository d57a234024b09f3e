"""The torch Dataset and the prefetching iterator return exactly what the reader reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcache.errors import StoreError
from featcache.store import FeatureStore
from featcache.store.torch_dataset import FeatureDataset, prefetch
from tests.store.storehelpers import KEY, fill


def test_dataset_items_and_prefetch_order(tmp_path):
    store = FeatureStore(tmp_path / "store")
    fill(store)
    reader = store.open(KEY)
    ds = FeatureDataset(reader, levels=["coarse"], indices=[4, 1])
    assert len(ds) == 4 and ds.items[1] == (4, 1)
    item = ds[1]
    assert item["coarse"].dtype == torch.float32 and item["coarse"].shape == (3, 2, 2)
    np.testing.assert_array_equal(item["coarse"].numpy(), reader.read(4, "coarse", view=1))
    assert "fine" not in item and item["frame"].shape == (4,)
    order = [3, 0, 2, 1, 3]
    got = [(it["index"], it["view"]) for it in prefetch(ds, order, depth=2, workers=2)]
    assert got == [ds.items[k] for k in order]
    with pytest.raises(StoreError, match="no level 'nope'"):
        FeatureDataset(reader, levels=["nope"])
