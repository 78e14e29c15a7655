"""Data: sources, object storage, validation, content hashing, example data."""
