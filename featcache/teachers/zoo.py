"""Importing this module registers every built-in teacher."""

from featcache.teachers import litemedsam, timm_backbone  # noqa: F401
