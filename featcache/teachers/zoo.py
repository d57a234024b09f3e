"""Importing this module registers every built-in teacher."""

from featcache.teachers import litemedsam  # noqa: F401
