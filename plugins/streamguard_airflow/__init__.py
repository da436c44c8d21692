"""Airflow-specific parts of StreamGuard ML: task wrappers, sensors, SageMaker wiring, UI.

Everything here is thin: each task calls one function of the ``streamguard_ml``
library.  Importing this package is cheap (no torch / transformers / PyG), so DAG
files that import it stay cheap to parse.
"""
