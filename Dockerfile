# The production image: the official Airflow 3 image plus this package (CPU torch).
# GPU training does not happen here: it runs as SageMaker jobs (training_backend=sagemaker).
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11

# A C compiler for the package's graph builder (native/fastgraph.c); without one the package
# still installs, but builds program graphs in pure Python, ~9x slower (2.7 s vs 0.31 s for 5,000).
USER root
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
USER airflow
WORKDIR /opt/streamguard
# CPU wheel of torch first, from PyTorch's CPU index, so the package's torch pin is already met.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --chown=airflow:root setup.cfg setup.py pyproject.toml MANIFEST.in README.md ./
COPY --chown=airflow:root native ./native
COPY --chown=airflow:root streamguard_ml ./streamguard_ml
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" ".[mlflow]"
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
WORKDIR /opt/airflow
