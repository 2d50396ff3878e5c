import typer
import uvicorn

from app.cli.errors import fail
from app.db import DatabaseNotMigrated, DatabaseUnreachable, check_migrated, get_engine
from app.settings import Settings, get_settings


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
) -> None:
    """Run the web server (pages and API). Training runs in `rlhf worker`, never here."""
    try:
        check_migrated(get_engine())
    except (DatabaseUnreachable, DatabaseNotMigrated) as exc:
        fail(str(exc))
    get_engine().dispose()  # forked server processes open their own connections
    typer.echo(f"rlhf-studio on http://{host}:{port}/", err=True)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        **proxy_options(get_settings()),
    )


def proxy_options(settings: Settings) -> dict[str, object]:
    """uvicorn believes X-Forwarded-* only from the configured proxies: by default it believes them from loopback,
    where any local client could forge an address (and dodge the per-address login throttle)."""
    trusted = settings.forwarded_allow_ips
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}
