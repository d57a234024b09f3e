"""Bad-input policy shared by every loader.

Problems found while listing files (an image without its mask, a mask without its image, a NIfTI
pair whose headers disagree) are known at build time. Problems that need decoding (a truncated
file, a non-binary mask, an image-mask size mismatch) are found at load time by default, which keeps
building cheap. With skip_bad=True every sample is decoded once while building (the verdict is
cached per file version, so repeats are fast), bad ones are left out and every left-out file is
recorded in `dataset.skipped` with its reason; nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from featcache.data.digest import cached_fact, file_key
from featcache.data.files import FileProblem

T = TypeVar("T")
_VERSION = "v2"  # bump when a validation rule changes, so cached verdicts are recomputed (v2: NaN)


def raise_first(problems: Sequence[FileProblem]) -> None:
    """Stop on the first build-time problem with one line, saying how many more there are."""
    if not problems:
        return
    first = problems[0]
    more = len(problems) - 1
    if more:
        raise FileProblem(first.path, f"{first.reason} (and {more} more problem(s); run `featcache "
                                      "datasets check` to list them all, or use skip_bad to leave "
                                      "them out)", first.hint)
    raise first


def skipped_reasons(skipped: Sequence[dict[str, str]], show: int = 3) -> str:
    """'; N file(s) skipped: path: reason; ...' for an error that says nothing was left to use:
    why each file went, not only how many."""
    if not skipped:
        return ""
    named = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:show])
    more = f"; and {len(skipped) - show} more (`featcache datasets check` lists them)" \
        if len(skipped) > show else ""
    return f"; {len(skipped)} file(s) skipped: {named}{more}"


def screen(items: Sequence[T], files: Callable[[T], Sequence[Path]], validate: Callable[[T], None],
           salt: str = "") -> tuple[list[T], list[dict[str, str]]]:
    """Decode-check every item; return (good items, records of the bad ones).

    `files(item)` lists the item's source files (their versions key the cached verdict); `salt`
    carries the options that change the verdict (mask mode, channel, ...).
    """
    good: list[T] = []
    bad: list[dict[str, str]] = []
    for item in items:
        verdict = _verdict(item, files, validate, salt)
        if verdict is None:
            good.append(item)
        elif verdict not in bad:  # a volume's problem is shared by all its slices: record once
            bad.append(verdict)
    return good, bad


def _verdict(item: T, files: Callable[[T], Sequence[Path]], validate: Callable[[T], None],
             salt: str) -> dict[str, str] | None:
    def compute() -> str:
        try:
            validate(item)
        except FileProblem as problem:
            return json.dumps(problem.record())
        return ""

    try:
        key = "|".join(file_key(p) for p in files(item))
    except OSError as exc:
        return {"path": str(getattr(exc, "filename", "") or files(item)[0]),
                "reason": f"cannot stat file ({exc.strerror or exc})"}
    value = cached_fact(f"valid:{_VERSION}:{salt}:{key}", compute)
    return json.loads(value) if value else None
