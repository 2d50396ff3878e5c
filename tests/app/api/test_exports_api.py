"""GET /api/v1/exports/{format}: the file with its sha256 (`Repr-Digest`) and row count (`X-Row-Count`)."""

import base64
import hashlib
import json

import pytest

from tests.conftest import BACKENDS
from tests.factories import build_dataset


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_get_export_digest_row_count_filters_and_cleanup(client, db, api, settings):
    build_dataset(db)
    _, headers = api("admin")
    res = client.get("/api/v1/exports/trl", params={"include_ties": "true", "source": "human"}, headers=headers)
    assert res.status_code == 200
    digest = base64.b64encode(hashlib.sha256(res.content).digest()).decode()
    assert res.headers["repr-digest"] == f"sha-256=:{digest}:"
    lines = [json.loads(x) for x in res.text.splitlines()]
    assert res.headers["x-row-count"] == str(len(lines)) == "8" and all("tie" in x for x in lines)
    again = client.get("/api/v1/exports/trl", params={"include_ties": "true", "source": "human"}, headers=headers)
    assert again.content == res.content
    res = client.get("/api/v1/exports/rich", params={"annotator": "bob", "csv": "true"}, headers=headers)
    assert res.status_code == 200 and res.headers["x-row-count"] == "4" and res.text.startswith("annotation_id,")
    assert client.get("/api/v1/exports/parquet", headers=headers).status_code == 404
    assert client.get("/api/v1/exports/trl", params={"since": "soon"}, headers=headers).status_code == 422
    assert client.get("/api/v1/exports/kto", params={"csv": "true"}, headers=headers).status_code == 422
    assert not list((settings.data_dir / "exports").glob("*.jsonl"))  # served, then removed


def test_an_empty_export_is_a_404_with_the_reason_not_an_empty_file(client, db, api, settings):
    build_dataset(db)
    _admin, headers = api("admin")
    answer = client.get("/api/v1/exports/sft?source=ai", headers=headers)
    assert answer.status_code == 404
    assert "empty sft export: no annotation matches (source=ai)" in answer.json()["detail"]
    assert list((settings.data_dir / "exports").iterdir()) == []  # nothing half-written is kept
