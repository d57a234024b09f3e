"""Importing this package registers every built-in dataset loader."""

from featcache.data.loaders import busi, cvc, demo, drive, folder, images, kvasir, msd  # noqa: F401
