"""Airflow plugin: the "Model registry" page in the Airflow 3 UI.

The API server mounts the page's FastAPI app under ``/streamguard``;
``external_views`` with a ``url_route`` adds a "Model registry" entry to the
UI's Browse menu that shows the page inside Airflow (``/plugin/model-registry``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from streamguard_airflow.registry_page import create_app

URL_PREFIX = "/streamguard"
BASE_PATH = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class StreamGuardRegistryPlugin(AirflowPlugin):
    name = "streamguard_registry"
    fastapi_apps = [{"name": "streamguard_registry", "app": create_app(), "url_prefix": URL_PREFIX}]
    external_views = [{"name": "Model registry", "href": f"{BASE_PATH}{URL_PREFIX}/registry/",
                       "url_route": "model-registry", "destination": "nav", "category": "browse"}]
