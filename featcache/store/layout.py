"""The shape of one entry (dataset x teacher), known before any feature is computed."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from featcache.errors import StoreError

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,150}$")
# what entry_key gives: dataset slug, teacher slug, content hash (a user's folder is never taken
# for a damaged entry: `my_notes` has another form)
ENTRY_NAME = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+\.[0-9a-f]+$")

# blosc: lz4 + bitshuffle (the default; fastest to decode, smallest on feature maps we measured);
# zstd: level 3 (the codec of entries written before blosc); none: crc32c only, no size reduction.
COMPRESSIONS = ("blosc", "zstd", "none")
# Layout dicts of entries written before the option existed carry no "compression": they are zstd.
LEGACY_COMPRESSION = "zstd"


def check_compression(name: str) -> str:
    if name not in COMPRESSIONS:
        raise StoreError(f"unknown compression {name!r}; use one of {', '.join(COMPRESSIONS)}")
    return name


@dataclass(frozen=True)
class LevelLayout:
    name: str
    channels: int
    height: int
    width: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "channels": self.channels, "height": self.height,
                "width": self.width}


@dataclass(frozen=True)
class EntryLayout:
    sample_ids: tuple[str, ...]
    views: int
    levels: tuple[LevelLayout, ...]
    shard_size: int = 16
    precision: str = "fp16"
    view_param_names: tuple[str, ...] = field(default_factory=tuple)
    compression: str = "blosc"  # see COMPRESSIONS

    @property
    def num_samples(self) -> int:
        return len(self.sample_ids)

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_range(self, shard: int) -> tuple[int, int]:
        if not 0 <= shard < self.num_shards:
            raise StoreError(f"shard {shard} out of range 0..{self.num_shards - 1}")
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.num_samples)

    def to_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "views": self.views, "shard_size": self.shard_size,
                "precision": self.precision, "levels": [lv.to_dict() for lv in self.levels],
                "view_param_names": list(self.view_param_names), "compression": self.compression}

    def same_data(self, stored: dict[str, Any]) -> bool:
        """True if a stored layout dict describes the same numbers as this layout: everything but
        the (lossless) compression agrees."""
        mine = {k: v for k, v in self.to_dict().items() if k != "compression"}
        return {k: v for k, v in stored.items() if k != "compression"} == mine

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> EntryLayout:
        """The layout of an entry from its featcache attributes (layout dict + sample ids)."""
        lay = meta["layout"]
        return cls(sample_ids=tuple(meta["sample_ids"]), views=lay["views"],
                   levels=tuple(LevelLayout(**lv) for lv in lay["levels"]), shard_size=lay["shard_size"],
                   precision=lay["precision"], view_param_names=tuple(lay["view_param_names"]),
                   compression=lay.get("compression", LEGACY_COMPRESSION))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def entry_key(dataset_name: str, dataset_fingerprint: str, teacher_name: str,
              teacher_fingerprint: str) -> str:
    """Readable prefix + content hash: identical extractions share a key, others never do."""
    digest = hashlib.sha256(f"{dataset_fingerprint}:{teacher_fingerprint}".encode()).hexdigest()
    return f"{_slug(dataset_name)}.{_slug(teacher_name)}.{digest[:16]}"


def is_key(name: str) -> bool:
    return bool(_KEY.match(name)) and ".." not in name


def check_key(key: str) -> str:
    """Entry keys name a folder or object prefix: no separators, no '..', nothing absolute."""
    if not is_key(key):
        raise StoreError(f"invalid entry key {key!r}: use the keys `featcache ls` prints")
    return key
