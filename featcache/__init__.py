"""featcache: run foundation-model teachers once, distil a small segmentation student from the cache."""

__version__ = "0.1.0"

# Bumped whenever the meaning of stored features changes (preprocessing, level extraction, layout),
# so entries made by an older featcache get a different key instead of silently mixing.
FEATURE_FORMAT_VERSION = 1
