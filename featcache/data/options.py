"""Loader options (seed, fractions, skip_bad, loader-specific ones) and root discovery.

Unknown or malformed options are user errors: they stop with one line that lists the known ones,
instead of a Python TypeError from deep inside a builder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from featcache.errors import DatasetError

COMMON_DEFAULTS: dict[str, Any] = {"seed": 0, "fractions": (0.7, 0.1, 0.2), "skip_bad": False}


def resolve_options(dataset: str, given: dict[str, Any], extra: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Merge `given` over the common and loader-specific defaults; validate the common ones."""
    defaults = {**COMMON_DEFAULTS, **(extra or {})}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise DatasetError(f"{dataset}: unknown option(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(defaults))}")
    opts = {**defaults, **given}
    if not isinstance(opts["seed"], int) or isinstance(opts["seed"], bool):
        raise DatasetError(f"{dataset}: seed must be an integer, got {opts['seed']!r}")
    opts["fractions"] = check_fractions(dataset, opts["fractions"])
    opts["skip_bad"] = bool(opts["skip_bad"])
    return opts


def check_fractions(dataset: str, fractions: Any) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise DatasetError(f"{dataset}: fractions must be three non-negative numbers (train, val, "
                           f"test) summing to 1, got {fractions!r}")
    return values  # type: ignore[return-value]


def fingerprint_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Options as stored in the dataset (and hashed by its fingerprint): JSON types, no skip_bad.

    skip_bad changes which samples exist, and the sample list is hashed anyway; leaving the flag out
    lets a clean dataset built with and without it share one fingerprint (and one feature cache).
    """
    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    return {k: plain(v) for k, v in sorted(opts.items()) if k != "skip_bad"}


def require_root(dataset: str, root: Path | None, expected: str) -> Path:
    """The dataset root must exist, be a folder and not be empty."""
    if root is None:
        raise DatasetError(f"{dataset}: no dataset folder given; set root to {expected}",
                           fields=("root",))
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{dataset}: root {root} does not exist; pass the folder holding {expected}")
    if not root.is_dir():
        raise DatasetError(f"{dataset}: root {root} is not a folder; pass the folder holding {expected}")
    if not any(root.iterdir()):
        raise DatasetError(f"{dataset}: root {root} is empty; it should hold {expected}")
    return root


def locate(dataset: str, root: Path, markers: tuple[str, ...], expected: str) -> Path:
    """The folder holding all `markers`: `root` itself, or its one subfolder that does.

    Archives often unpack into an extra level (Kvasir-SEG.zip -> Kvasir-SEG/images), so one level
    down is searched too; two matching subfolders are ambiguous and reported.
    """
    if all((root / m).exists() for m in markers):
        return root
    found = [d for d in sorted(root.iterdir())
             if d.is_dir() and all((d / m).exists() for m in markers)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
        raise DatasetError(f"{dataset}: several folders under {root} look like the dataset ({names}); "
                           "set root to one of them", fields=("root",))
    raise DatasetError(f"{dataset}: {root} does not have the expected layout; expected {expected}")
