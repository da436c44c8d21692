"""Issue 17 item 12: the ``store`` Param may only name a store the deployment allows."""

from __future__ import annotations

import pytest

from streamguard_airflow import runtime
from streamguard_ml.config import ALLOWED_STORES_ENV, check_store_allowed


def test_unset_setting_allows_any_store(monkeypatch, tmp_path):
    monkeypatch.delenv(ALLOWED_STORES_ENV, raising=False)
    assert check_store_allowed(str(tmp_path / "anywhere")) == str(tmp_path / "anywhere")


def test_stores_under_an_allowed_root_pass_and_others_are_refused(tmp_path):
    root = tmp_path / "stores"
    (root / "team-a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    allowed = (str(root), "s3://artifacts/streamguard")
    for ok in (str(root), str(root / "team-a"), "s3://artifacts/streamguard", "s3://artifacts/streamguard/team-b"):
        assert check_store_allowed(ok, allowed) == ok
    for bad in (str(tmp_path / "elsewhere"), f"{root}/../elsewhere", str(root / "link"), "/etc",
                "s3://artifacts/streamguard-other", "s3://artifacts/streamguard/../secrets", "s3://other/streamguard",
                f"s3://{root}"):
        with pytest.raises(ValueError, match=f"{ALLOWED_STORES_ENV}.*leave the store Param empty"):
            check_store_allowed(bad, allowed)


def test_task_runtime_refuses_a_store_param_outside_the_setting(monkeypatch, tmp_path):
    allowed = tmp_path / "allowed"
    monkeypatch.setenv(ALLOWED_STORES_ENV, str(allowed))
    monkeypatch.setenv("STREAMGUARD_STORE", str(allowed / "default"))
    assert runtime.store({"params": {"store": str(allowed / "mine")}}).root == str(allowed / "mine")
    assert runtime.store({"params": {"store": ""}}).root == str(allowed / "default")  # empty: the deployment's
    with pytest.raises(ValueError, match="not one this deployment allows"):
        runtime.store({"params": {"store": str(tmp_path / "other")}})
