"""Shard leases, so several writers can fill one entry without doing the same shard twice.

A claim is the object `<entry>/claims/<shard>.<generation>.json` = {owner, host, pid, shard,
generation, expires}, created with create-if-absent. The highest generation is the live claim.
Taking over an expired claim of generation g means creating generation g + 1 exclusively, so
of two writers racing for the same expired shard exactly one wins; nobody deletes a claim it
does not own. Expiry uses wall clocks: hosts sharing a store need clocks within the TTL. A claim whose owner
process is gone from this same host counts as expired at once (a crashed local run resumes).
A lost race or a stale claim never corrupts data: shard content is deterministic and the commit
marker is written only after all data.

Beside shard claims, each extract holds a writer lease on the whole entry for as long as it has
the entry open, `<entry>/claims/writer.<token>.json` (same body, renewed like a claim): between
two shards, or while it computes statistics, no shard may be claimed, yet the entry is live.
`featcache rm` refuses an entry with a live lease, and a writer whose lease object is gone (an
`rm --force`) stops by name before it writes again.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from featcache.store.backends import Backend

DEFAULT_TTL_S = 600.0
WRITER = "writer"  # the first part of a writer lease's name: never a shard number


@dataclass(frozen=True)
class Claim:
    shard: int
    generation: int
    owner: str
    expires: float
    host: str = ""
    pid: int = 0

    @property
    def expired(self) -> bool:
        """Past its expiry, or held by a process on this host that no longer exists."""
        return time.time() >= self.expires or self._owner_dead()

    def _owner_dead(self) -> bool:
        # a crashed writer on this machine need not block its shard for a whole TTL
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claims:
    def __init__(self, backend: Backend, entry: str, owner: str | None = None,
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        self.backend = backend
        self.prefix = f"{entry}/claims"
        self.owner = owner or new_owner()
        self.ttl_s = ttl_s
        self.held: dict[int, int] = {}  # shard -> generation this writer holds
        self.lease: str | None = None  # this writer's lease object on the entry, while held
        # writer threads release the shards they commit while the main thread claims and renews
        self._lock = threading.RLock()

    def _key(self, shard: int, generation: int) -> str:
        return f"{self.prefix}/{shard}.{generation}.json"

    def all(self) -> list[Claim]:
        """Every shard claim object in the entry (all generations)."""
        return [claim for _, claim in self._read(shards=True)]

    def writers(self) -> list[Claim]:
        """Every writer lease on the entry (shard -1), live or expired."""
        return [claim for _, claim in self._read(shards=False)]

    def live(self) -> list[Claim]:
        """Live shard claims and writer leases: while there is one, the entry is being written."""
        return [c for c in self.all() + self.writers() if not c.expired]

    def _read(self, shards: bool) -> list[tuple[str, Claim]]:
        """(object key, claim) of the shard claims, or of the writer leases."""
        out = []
        for key in self.backend.list(self.prefix):
            name = key.rsplit("/", 1)[-1]
            parts = name.split(".")
            if len(parts) != 3 or parts[2] != "json" or parts[0].isdigit() != shards:
                continue
            if shards and not parts[1].isdigit():
                continue
            if not shards and parts[0] != WRITER:
                continue
            shard, generation = (int(parts[0]), int(parts[1])) if shards else (-1, 0)
            raw = self.backend.get(key)
            try:
                body = json.loads(raw or b"{}")
                out.append((key, Claim(shard, generation, str(body["owner"]), float(body["expires"]),
                                       str(body.get("host", "")), int(body.get("pid", 0)))))
            except (ValueError, KeyError, TypeError):
                # a half-visible or damaged claim counts as expired so it can be taken over
                out.append((key, Claim(shard, generation, "?", 0.0)))
        return out

    def current(self, shard: int) -> Claim | None:
        mine = [c for c in self.all() if c.shard == shard]
        return max(mine, key=lambda c: c.generation) if mine else None

    def _body(self, shard: int, generation: int) -> bytes:
        host, pid = socket.gethostname(), os.getpid()
        return json.dumps({"owner": self.owner, "host": host, "pid": pid, "shard": shard,
                           "generation": generation, "expires": time.time() + self.ttl_s}).encode()

    def claim(self, shard: int) -> bool:
        """Take the shard if nobody holds a live claim on it; True when this writer holds it."""
        with self._lock:
            return self._claim(shard)

    def _claim(self, shard: int) -> bool:
        live = self.current(shard)
        if live is not None and live.owner == self.owner and not live.expired:
            self.held[shard] = live.generation
            return True
        if live is not None and not live.expired:
            return False
        generation = 0 if live is None else live.generation + 1
        if not self.backend.put_exclusive(self._key(shard, generation), self._body(shard, generation)):
            return False
        self.held[shard] = generation
        return True

    def still_mine(self, shard: int) -> bool:
        live = self.current(shard)
        return live is not None and live.owner == self.owner and live.generation == self.held.get(shard)

    def renew(self, shard: int) -> bool:
        """Push the expiry of a held claim TTL seconds ahead; False if it was taken over."""
        with self._lock:  # never re-write a claim that a writer thread has just released
            if shard not in self.held or not self.still_mine(shard):
                self.held.pop(shard, None)
                return False
            generation = self.held[shard]
            self.backend.put(self._key(shard, generation), self._body(shard, generation))
            return True

    def release(self, shard: int) -> None:
        with self._lock:
            generation = self.held.pop(shard, None)
            if generation is not None:
                self.backend.delete(self._key(shard, generation))

    def remove_expired(self) -> int:
        """Delete expired claim objects and writer leases (gc); returns how many."""
        stale = [key for key, c in self._read(True) + self._read(False) if c.expired]
        for key in stale:
            self.backend.delete(key)
        return len(stale)

    # -- the writer lease on the whole entry ----------------------------------------------------
    def hold_entry(self) -> None:
        """Take this writer's lease on the entry (see the module docstring)."""
        with self._lock:
            if self.lease is None:
                self.lease = f"{self.prefix}/{WRITER}.{uuid.uuid4().hex[:16]}.json"
                self.backend.put(self.lease, self._body(-1, 0))

    def renew_entry(self) -> None:
        with self._lock:
            if self.lease is not None and not self.lease_lost():
                self.backend.put(self.lease, self._body(-1, 0))

    def release_entry(self) -> None:
        with self._lock:
            lease, self.lease = self.lease, None
            if lease is not None:
                self.backend.delete(lease)

    def lease_lost(self) -> bool:
        """True when this writer held a lease and its object is gone: the entry was removed
        (`featcache rm --force`) under it."""
        return self.lease is not None and self.backend.get(self.lease) is None
