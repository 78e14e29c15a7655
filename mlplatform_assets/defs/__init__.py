"""The Dagster layer: thin wiring from model specs to assets, checks, jobs, schedules and sensors."""
