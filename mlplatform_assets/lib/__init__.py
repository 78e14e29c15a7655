"""Plain-Python ML logic. Nothing under this package imports Dagster."""
