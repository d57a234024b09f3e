"""Importing this package registers every built-in dataset loader."""
