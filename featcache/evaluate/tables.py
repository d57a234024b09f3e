"""Metric values as text, for the report's markdown tables and the CLI's rich tables."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A number for display; None/NaN as an em dash."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mean_std(row: dict[str, Any], name: str, digits: int = 3) -> str:
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    return "—" if mean is None or mean != mean else f"{fmt(mean, digits)} ± {fmt(std, digits)}"
