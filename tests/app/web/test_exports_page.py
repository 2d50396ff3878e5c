"""/admin/exports: the download is served with its sha256 (`Repr-Digest`) and row count (`X-Row-Count`)."""

import base64
import hashlib

from tests.factories import build_dataset


def test_export_download_has_digest_and_row_count(client, db, make_user, login):
    build_dataset(db)
    login(make_user("admin"))
    res = client.get(
        "/admin/exports/download",
        params={
            "format": "trl",
            "source": "all",
            "split": "",
            "since": "",
            "until": "",
            "until_id": "",
            "min_agreement": "",
        },
    )
    assert res.status_code == 200
    digest = base64.b64encode(hashlib.sha256(res.content).digest()).decode()
    assert res.headers["repr-digest"] == f"sha-256=:{digest}:" and res.headers["x-row-count"] == "8"
    assert len(res.text.splitlines()) == 8  # 7 choice and ranking pairs, 1 rewrite pair
    bad = client.get("/admin/exports/download", params={"format": "trl", "until_id": "x"})
    assert bad.status_code == 422
    assert client.get("/admin/exports/download", params={"format": "parquet"}).status_code == 404
