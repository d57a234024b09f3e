"""Importing this module registers every built-in teacher."""

from featcache.teachers import clip, litemedsam, sam, timm_backbone  # noqa: F401
