"""Datasets: loaders for published layouts, splits, fingerprints and views."""
