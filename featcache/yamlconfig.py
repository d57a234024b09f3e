"""Reading YAML configs safely and turning pydantic errors into one line that names the key.

Shared by distillation manifests and study files: yaml.safe_load only (no tags that run code).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from featcache.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads `1e-3` as a number: PyYAML follows YAML 1.1, where a float
    needs a dot (`1.0e-3`), so `lr: 1e-3` would otherwise arrive as the string "1e-3"."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def safe_load(text: str) -> Any:
    """yaml.safe_load with YAML 1.2 exponent floats (`1e-3`); plain data only, no tags that run code."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path, what: str, hint: str) -> Any:
    """The parsed document, or a ConfigError naming the file (`what` is e.g. "manifest")."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; {hint}")
    try:
        return safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def validation_message(exc: ValidationError) -> str:
    """`key a.b.c: <reason>`, plus how many other problems there are."""
    errors = exc.errors()
    where = ".".join(str(p) for p in errors[0]["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"key {where}: {errors[0]['msg']}{more}"
