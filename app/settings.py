"""One Settings class for the whole service (environment prefix `RLHF_`)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RLHF_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Models, exports, job outputs and the SQLite file.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means a SQLite file in the data dir.")
    secret_key: str = Field("", description="Signs session cookies; generated and kept in the data dir when unset.")

    # auth
    session_max_age_s: int = 7 * 24 * 3600
    login_max_failures: int = 10  # per user and per address, per login_window_s
    login_window_s: int = 60
    secure_cookies: bool = False  # set behind HTTPS
    forwarded_allow_ips: str = Field(
        "",
        description="Comma-separated addresses or networks (or *) of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; empty: none, the client address is the connection's (so a forged header "
        "cannot dodge the per-address login throttle).",
    )

    # single sign-on (OpenID Connect, app.oidc): on when oidc_issuer is set; passwords keep working beside it
    oidc_issuer: str = Field(
        "", description="The provider's issuer URL (its /.well-known/openid-configuration is read); empty: no SSO."
    )
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = Field("openid profile email", description="Space-separated; must include openid.")
    oidc_role_claim: str = Field(
        "",
        description="The ID-token claim that holds a user's role (a role name, or a list holding one): set, the "
        "role follows it at every sign-in (admin if it names admin, else annotator); empty: a user made by "
        "sign-in is an annotator.",
    )

    # annotation
    lease_minutes: float = 10.0
    undo_minutes: float = 5.0
    max_text_bytes: int = 64 * 1024
    max_upload_bytes: int = 50 * 1024 * 1024
    # Every request body but an upload's (app.body_limit): room for the largest annotation (eight critiques, a
    # critique and a rewrite at max_text_bytes each, URL-encoded).
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # PostgreSQL: annotate transactions one server process runs at once (others wait on the event loop). Measured with
    # bench/annotate_load.py at 32 clients on 2 cores: 4 gave 320/s at p99 150 ms, unbounded (one per thread) 226/s
    # at p99 420 ms: that many threads and backends only fight over the GIL and the cores.
    pg_annotate_concurrency: int = Field(4, ge=1)
    # Gold tasks and qualification (app.services.gold): the share of new leases that are a gold task the annotator
    # has not seen, and whether annotators must pass the qualification set (at the threshold) before real tasks.
    gold_rate: float = Field(0.1, ge=0.0, le=1.0)
    qualification_required: bool = False
    qualification_threshold: float = Field(0.8, ge=0.0, le=1.0)

    # careless-annotator flags on the users page (app/services/annotator_signals.py): an annotator with at least
    # flag_min_labels labels is flagged for each signal past its threshold
    flag_min_labels: int = Field(20, ge=1)
    flag_min_alpha: float = Field(0.2, description="Agreement with the rest (Krippendorff's alpha) below this.")
    flag_min_time_ratio: float = Field(0.25, ge=0, description="Median time per task below this x everyone's median.")
    flag_max_bias: float = Field(0.35, ge=0, le=0.5, description="Position or length bias further than this from 0.5.")
    flag_max_straight_lining: float = Field(0.9, ge=0, le=1, description="The same answer pattern this often or more.")
    flag_min_gold_accuracy: float = Field(0.7, ge=0, le=1, description="Accuracy on gold tasks below this.")

    # AI feedback (app/services/ai_calibration.py): a round refuses AI labels whose judge agreed with people less
    # than this on its latest calibration (or was never calibrated), unless the round allows untrusted AI labels.
    ai_min_agreement: float = Field(
        0.7, ge=0, le=1, description="Least agreement with human labels, per task kind, for a round to use AI labels."
    )

    # pages
    offline_assets: bool = False  # serve htmx & co from static/vendor instead of the CDN
    docs_enabled: bool = True  # OpenAPI docs at /docs, admins only

    # `rlhf demo`: the accounts it creates (passwords generated and printed once when unset)
    demo_admin_user: str = "admin"
    demo_admin_password: str = ""
    demo_annotator_user: str = "annotator"
    demo_annotator_password: str = ""

    # job queue
    heartbeat_s: float = 3.0
    stale_after_s: float = 30.0  # a running job whose heartbeat is older than this is requeued
    job_max_attempts: int = 3
    worker_poll_s: float = 1.0
    cancel_grace_s: float = 3.0  # SIGTERM, then SIGKILL after this, so cancel ends within 5 s

    # training
    gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory of one GPU the worker trains on, in GB: a round whose memory plan (`python -m trainer "
        "plan`) does not fit refuses to start. Unset: no check (CPU deployments).",
    )
    train_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes each training stage of a round runs on (torchrun --nproc-per-node, one per GPU, or "
        "CPU processes sharing the cores); a round's train_processes overrides it.",
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address, a network or *") from None
        return ",".join(entries)

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        # kept as written, trailing slash included: the ID token's iss must equal it exactly (OpenID Connect)
        value = value.strip()
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"oidc_issuer must be an http(s) URL, not {value!r}")
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("oidc_issuer is set but oidc_client_id is not")
        if self.oidc_issuer and "openid" not in self.oidc_scopes.split():
            raise ValueError("oidc_scopes must include openid")
        return self

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def qualification_bar(self) -> float | None:
        """The share of the qualification set an annotator must get right, or None when none is required."""
        return self.qualification_threshold if self.qualification_required else None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'rlhf.sqlite3'}"

    def ensure_data_dir(self) -> Path:
        """The data dir, private (0700): it holds the database, the secret key, models and exports. One an older
        version created readable by others is made private too."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.data_dir.stat().st_mode & 0o077:
            self.data_dir.chmod(0o700)
        return self.data_dir

    def session_secret(self) -> str:
        """The configured key, or one generated once and kept in the data dir (so restarts keep sessions)."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.ensure_data_dir()
            tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)  # fails if another process won the race: both then read its key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()


# What the service writes (the SQLite file, exports, snapshots, models, logs) is for its own user only; the server
# processes, the worker and its children (the trainer) inherit the mask.
PRIVATE_UMASK = 0o077


def keep_private(settings: Settings) -> None:
    """Files this process and its children write are private, and so is the data dir: for every way the service is
    started (the `rlhf` CLI, or an ASGI server given `app.main:create_app`)."""
    os.umask(PRIVATE_UMASK)
    settings.ensure_data_dir()


@lru_cache
def get_settings() -> Settings:
    return Settings()
