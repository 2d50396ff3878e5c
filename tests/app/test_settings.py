"""Settings: defaults and the generated secret."""


def test_settings_defaults_and_generated_secret(tmp_path, monkeypatch):
    from app.settings import Settings

    monkeypatch.delenv("RLHF_DATABASE_URL", raising=False)
    monkeypatch.delenv("RLHF_SECRET_KEY", raising=False)
    monkeypatch.setenv("RLHF_DATA_DIR", str(tmp_path / "d"))
    s = Settings()
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'd' / 'rlhf.sqlite3'}"
    key = s.session_secret()
    assert len(key) > 40 and (tmp_path / "d" / "secret_key").read_text().strip() == key
    assert Settings().session_secret() == key  # kept across restarts
    monkeypatch.setenv("RLHF_SECRET_KEY", "given")
    assert Settings().session_secret() == "given"
