"""/api/v1/users and their tokens."""


def test_users_and_tokens_api(client, db, api):
    admin, headers = api("admin")
    res = client.post("/api/v1/users", json={"username": "ann1", "password": "long-password"}, headers=headers)
    assert res.status_code == 201 and res.json()["role"] == "annotator"
    uid = res.json()["id"]
    assert (
        client.post(
            "/api/v1/users", json={"username": "ann1", "password": "long-password"}, headers=headers
        ).status_code
        == 409
    )
    assert (
        client.post("/api/v1/users", json={"username": "ann2", "password": "short"}, headers=headers).status_code == 422
    )
    tok = client.post(f"/api/v1/users/{uid}/tokens", json={"name": "cli"}, headers=headers)
    assert tok.status_code == 201
    token, tid = tok.json()["token"], tok.json()["id"]
    ann_headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/stats", headers=ann_headers).status_code == 403  # an annotator is not an admin
    listed = client.get(f"/api/v1/users/{uid}/tokens", headers=headers).json()
    assert listed[0]["id"] == tid and "token" not in listed[0] and "token_hash" not in listed[0]
    assert client.delete(f"/api/v1/users/{uid}/tokens/{tid}", headers=headers).status_code == 200
    assert client.get("/api/v1/stats", headers=ann_headers).status_code == 401
    assert (
        client.patch(f"/api/v1/users/{uid}", json={"password": "new-long-password"}, headers=headers).status_code == 200
    )
    res = client.patch(f"/api/v1/users/{uid}", json={"is_active": False}, headers=headers)
    assert res.status_code == 200 and res.json()["is_active"] is False
    assert client.patch(f"/api/v1/users/{admin.id}", json={"is_active": False}, headers=headers).status_code == 422
    assert client.patch("/api/v1/users/9999", json={"is_active": False}, headers=headers).status_code == 404
    assert client.delete(f"/api/v1/users/{uid}/tokens/9999", headers=headers).status_code == 404
    assert [u["username"] for u in client.get("/api/v1/users", headers=headers).json()] == [admin.username, "ann1"]


def test_labels_excluded_is_set_and_cleared_through_patch_and_signals_are_listed(client, db, api):
    _admin, headers = api("admin")
    uid = client.post("/api/v1/users", json={"username": "ann9", "password": "long-password"}, headers=headers)
    uid = uid.json()["id"]
    res = client.patch(f"/api/v1/users/{uid}", json={"labels_excluded": True}, headers=headers)
    assert res.status_code == 200 and res.json()["labels_excluded"] is True and res.json()["is_active"] is True
    res = client.patch(f"/api/v1/users/{uid}", json={"labels_excluded": False}, headers=headers)
    assert res.json()["labels_excluded"] is False
    assert client.get("/api/v1/users/signals", headers=headers).json() == {}  # nobody has labelled yet
    _ann, ann_headers = api("annotator")
    assert client.get("/api/v1/users/signals", headers=ann_headers).status_code == 403
