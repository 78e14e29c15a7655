"""mlplatform: a declarative ML lifecycle on Dagster and MLflow.

Importing this package has no side effects: nothing reads the environment,
touches the network or creates directories until a function is called.
"""

__version__ = "0.1.0"
