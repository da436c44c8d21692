# The two commands of the README: `make run` and `make test`.
# Everything is set up on first use: a virtualenv in .venv, an Airflow home in .airflow
# and the artifact store in .streamguard (all git-ignored).

PYTHON      ?= python3
VENV        := $(CURDIR)/.venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
AIRFLOW_HOME_DIR := $(CURDIR)/.airflow

export AIRFLOW_HOME := $(AIRFLOW_HOME_DIR)
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test install airflow-db clean

install: $(STAMP)

# torch is installed first from its pinned CPU wheel; then the package with its test extra.
# The .pth file makes .venv/bin/airflow and .venv/bin/streamguard-ml find this repo's
# Airflow home, DAGs, plugins and store without any environment set by hand.
$(STAMP): setup.cfg setup.py pyproject.toml native/fastgraph.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	printf '%s\n' "import os; [os.environ.setdefault(k, v) for k, v in (('AIRFLOW_HOME', '$(AIRFLOW_HOME_DIR)'), ('AIRFLOW__CORE__DAGS_FOLDER', '$(CURDIR)/dags'), ('AIRFLOW__CORE__PLUGINS_FOLDER', '$(CURDIR)/plugins'), ('AIRFLOW__CORE__LOAD_EXAMPLES', 'False'), ('STREAMGUARD_STORE', '$(CURDIR)/.streamguard'), ('HF_HUB_OFFLINE', '1'))]" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/streamguard_env.pth"
	touch $@

$(AIRFLOW_HOME_DIR)/airflow.db: $(STAMP)
	mkdir -p $(AIRFLOW_HOME_DIR)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME_DIR)/migrate.log 2>&1 || (tail -30 $(AIRFLOW_HOME_DIR)/migrate.log; exit 1)

airflow-db: $(AIRFLOW_HOME_DIR)/airflow.db

run: $(STAMP) airflow-db
	STREAMGUARD_STORE=$${STREAMGUARD_STORE:-$(CURDIR)/.streamguard} $(BIN)/airflow dags test streamguard_training

# The official SARIF 2.1.0 JSON schema, as Microsoft's SARIF SDK ships it in its npm package (the tests
# validate `streamguard-ml scan` output against it with jsonschema); fetched from the npm registry.
SARIF_SDK    := $(VENV)/sarif-sdk
SARIF_SCHEMA := $(SARIF_SDK)/node_modules/@microsoft/sarif-multitool-linux/sarif-2.1.0.json
export STREAMGUARD_SARIF_SCHEMA := $(SARIF_SCHEMA)

$(SARIF_SCHEMA): | $(STAMP)
	npm install --silent --no-save --ignore-scripts --no-audit --no-fund --prefix $(SARIF_SDK) \
		@microsoft/sarif-multitool-linux@5.7.0

test: $(STAMP) $(SARIF_SCHEMA)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .airflow .streamguard
