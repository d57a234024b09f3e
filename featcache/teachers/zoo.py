"""Importing this module registers every built-in teacher."""
