"""What ties an entry's bytes to the samples they belong to (format 2, FORMAT.md).

Each chunk's crc32c (checked by zarr and by fastread) proves a chunk is intact, not that it sits
where it should: swapped shard files, an edited `sample_ids`, or a missing chunk (which zarr
silently reads as the fill value) all pass it. So at commit the writer also records, per sample
and view, the crc32c of the sample's id and of its stored slice of every per-sample array in the
`checksums` array, beside the data and written before the commit marker; statistics get theirs
in the entry's attributes (`stats_crc32c`). Readers compare what they decoded with the record.
Entries of format 1 have no record and read as before.
"""

from __future__ import annotations

import unicodedata

import google_crc32c
import numpy as np

FORMAT_VERSION = 2
# Column prefix for the crc32c that ends each encoded (compressed) inner chunk of a sharded level,
# as the shard holds it. The local fast path checks that crc anyway, so comparing it with the
# record costs nothing; the decoded-values column serves readers that go through zarr.
CHUNK = "chunk:"


def chunk_crcs(shard: bytes, rows: int, views: int, slots: int) -> np.ndarray:
    """(rows, views) uint32: the crc32c trailer of each inner chunk of a sharded level's shard
    object (index at the end: `slots` (offset, nbytes) uint64 pairs + its crc32c, FORMAT.md)."""
    index = np.frombuffer(shard[len(shard) - slots * 16 - 4:-4], dtype="<u8").reshape(-1, 2)
    out = np.zeros((rows, views), np.uint32)
    for k in range(rows * views):
        end = int(index[k, 0] + index[k, 1])
        out[k // views, k % views] = int.from_bytes(shard[end - 4:end], "little")
    return out


def checksum_columns(layout, quantized: bool) -> list[str]:
    """Column names of the `checksums` array: "sample_id", then array paths inside the entry."""
    columns = ["sample_id", "frames", "view_params"]
    for lv in layout.levels:
        columns += [f"levels/{lv.name}", f"{CHUNK}levels/{lv.name}"]
        if quantized:
            columns += [f"levels/{lv.name}__scale", f"levels/{lv.name}__offset"]
    return columns


def crc_of(data: np.ndarray) -> int:
    """crc32c of an array's values as little-endian bytes in C order."""
    data = np.ascontiguousarray(data)
    if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and not np.little_endian):
        data = data.astype(data.dtype.newbyteorder("<"))
    return int(google_crc32c.value(data.reshape(-1).view(np.uint8)))


def id_crc(sample_id: str) -> int:
    """crc32c of a sample id (NFC UTF-8, so the same name from another OS matches)."""
    return int(google_crc32c.value(unicodedata.normalize("NFC", sample_id).encode("utf-8")))
