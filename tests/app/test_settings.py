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


def test_single_sign_on_settings_are_checked_together(tmp_path, monkeypatch):
    import pytest
    from pydantic import ValidationError

    from app.settings import Settings

    monkeypatch.setenv("RLHF_DATA_DIR", str(tmp_path / "d"))
    assert not Settings().oidc_enabled
    monkeypatch.setenv("RLHF_OIDC_ISSUER", " https://id.example.org/ ")
    with pytest.raises(ValidationError, match="oidc_client_id is not"):
        Settings()
    monkeypatch.setenv("RLHF_OIDC_CLIENT_ID", "rlhf")
    settings = Settings()
    # kept as written (but for spaces): the ID token's iss must equal it exactly
    assert settings.oidc_enabled and settings.oidc_issuer == "https://id.example.org/"
    monkeypatch.setenv("RLHF_OIDC_SCOPES", "profile email")
    with pytest.raises(ValidationError, match="must include openid"):
        Settings()
    monkeypatch.setenv("RLHF_OIDC_SCOPES", "openid")
    monkeypatch.setenv("RLHF_OIDC_ISSUER", "id.example.org")
    with pytest.raises(ValidationError, match="http"):
        Settings()
