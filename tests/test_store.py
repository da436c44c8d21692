"""The artifact store, local and on S3 (moto's server): atomic writes, listing, conditional writes."""

from __future__ import annotations

import pytest

from streamguard_ml.store import StoreError, open_store, safe_key


def test_roundtrip_and_listing(any_store):
    store = any_store
    store.write_json("a/b.json", {"x": 1})
    store.write_bytes("a/c/d.bin", b"\x00\x01")
    assert store.read_json("a/b.json") == {"x": 1}
    assert store.list("a") == ["a/b.json", "a/c/d.bin"]
    assert store.exists("a/c/d.bin") and not store.exists("a/zzz")
    assert store.key_of(store.uri("a/b.json")) == "a/b.json"


@pytest.fixture(params=["local", "s3"])
def any_store(request):
    return request.getfixturevalue("store" if request.param == "local" else "s3_store")


def test_conditional_writes(any_store):
    store = any_store
    assert store.put_if_absent("k.json", b"1") is True
    assert store.put_if_absent("k.json", b"2") is False
    data, token = store.read_versioned("k.json")
    assert data == b"1"
    assert store.replace_if("k.json", b"3", token) is True
    assert store.replace_if("k.json", b"4", token) is False  # stale token
    assert store.read_bytes("k.json") == b"3"
    assert store.replace_if("new.json", b"x", None) is True


def test_unsafe_keys_and_missing_objects(store):
    with pytest.raises(StoreError, match="unsafe"):
        safe_key("../etc/passwd")
    with pytest.raises(StoreError, match="does not exist"):
        store.read_bytes("nope")
    store.write_bytes("d/x", b"1")
    store.delete("d/x")
    assert not store.exists("d/x") and store.list("d") == []
    with pytest.raises(StoreError, match="unsupported store"):
        open_store("gs://bucket")
