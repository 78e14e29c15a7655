"""Models: features, training, evaluation, model I/O and trust, the registry, the lifecycle steps."""
