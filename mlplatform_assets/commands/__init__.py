"""Implementations of ``mlplatform`` commands that are more than a few lines (``cli.py`` keeps the wrappers)."""
