"""Subprocess writer for the concurrency and kill tests.

usage: python writer_worker.py URL STORAGE_OPTIONS_JSON OWNER MODE
MODE: claims   - fill the entry via next_shard() and finalize it if complete
      hang     - write shard 0's level data, then sleep (to be SIGKILLed before its marker)
"""

import json
import sys
import time

from featcache.errors import StoreError
from featcache.store import FeatureStore
from tests.store.storehelpers import ATTRS, KEY, make_layout, shard_data, stats_for, write_all

url, options, owner, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
store = FeatureStore(url, storage_options=options or None)
layout = make_layout(n=12, shard=2) if mode == "claims" else make_layout()
writer = store.create_entry(KEY, layout, ATTRS, owner=owner)
if mode == "claims":
    write_all(writer, use_claims=True)
    if not writer.missing_shards():
        try:
            writer.finalize(stats_for(layout), {})
        except StoreError:
            pass
    print("done", flush=True)
elif mode == "hang":
    writer.claim(0)
    feats, _, _ = shard_data(layout, 0)
    for name, data in feats.items():
        writer.group[f"levels/{name}"][0:2] = data.astype("float16")
    print("data written", flush=True)
    time.sleep(60)
