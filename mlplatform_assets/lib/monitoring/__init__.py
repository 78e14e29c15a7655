"""Monitoring: batch scoring, drift, realized quality, alerts and their sinks."""
