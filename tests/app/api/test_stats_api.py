"""GET /api/v1/stats."""

from tests.factories import build_dataset


def test_get_stats(client, db, api):
    build_dataset(db)
    _, headers = api("admin")
    stats = client.get("/api/v1/stats", headers=headers).json()
    assert set(stats) == {"counts", "throughput", "agreement", "annotators", "rates", "gold_accuracy"}
    assert stats["agreement"]["pairwise"]["level"] == "nominal" and stats["agreement"]["ranking"]["level"] == "ordinal"
    assert stats["annotators"]["alice"]["position_bias"] == 0.0
    assert client.get("/api/v1/stats", params={"source": "x"}, headers=headers).status_code == 422
