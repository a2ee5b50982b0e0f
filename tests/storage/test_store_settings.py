"""``get_store()`` builds the backend the settings name; secrets come from files."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from storage.local import LocalObjectStore
from storage.objects import get_store, make_store
from storage.s3 import S3ObjectStore
from storage.settings import get_settings


@pytest.fixture()
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("MXT_OBJECT_STORE", "MXT_S3_ENDPOINT", "MXT_SECRETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MXT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    get_store.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
    get_store.cache_clear()


def test_default_is_local_under_data_dir(fresh_settings, tmp_path: Path):
    store = get_store()
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "data" / "objects"
    store.put("raw", "a", b"x")
    assert (tmp_path / "data" / "objects" / "raw" / ".index" / "f_a").exists()
    assert get_store() is store  # one per process


def test_s3_with_credentials_from_secret_files(fresh_settings, tmp_path: Path, s3_endpoint: str):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "s3-access-key").write_text("testing\n")
    (secrets / "s3-secret-key").write_text("testing\n")
    fresh_settings.setenv("MXT_OBJECT_STORE", "s3")
    fresh_settings.setenv("MXT_S3_ENDPOINT", s3_endpoint)
    fresh_settings.setenv("MXT_SECRETS_DIR", str(secrets))
    store = make_store()
    assert isinstance(store, S3ObjectStore)
    credentials = store.client._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key) == ("testing", "testing")
    store.bucket_prefix = f"t{uuid.uuid4().hex[:8]}-"
    store.ensure_buckets()
    store.put("logs", "k", b"through secrets")
    assert store.get("logs", "k") == b"through secrets"


def test_invalid_backend_named(fresh_settings):
    fresh_settings.setenv("MXT_OBJECT_STORE", "ftp")
    with pytest.raises(ValueError, match="object_store"):
        get_settings()


def test_reader_keeps_old_content_during_overwrite(tmp_path: Path):
    store = LocalObjectStore(tmp_path)
    store.ensure_buckets()
    old = b"A" * (3 * 1024 * 1024)
    store.put("products", "p", old)
    chunks = store.stream("products", "p", chunk_size=1024 * 1024)
    first = next(chunks)
    store.put("products", "p", b"B" * 10)
    assert first + b"".join(chunks) == old
    assert store.get("products", "p") == b"B" * 10
    assert len(list((tmp_path / "products" / ".blobs").iterdir())) == 1  # old blob reclaimed
