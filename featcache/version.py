"""featcache's version and the version of the meaning of stored features.

FEATURE_FORMAT_VERSION is bumped whenever the meaning of stored features changes (preprocessing,
level extraction, layout), so entries made by an older featcache get a different key instead of
silently mixing. Both live here, below every other module, so that teachers and extraction can
name them without importing the package front (which loads the Python API)."""

__version__ = "0.1.0"
FEATURE_FORMAT_VERSION = 1
