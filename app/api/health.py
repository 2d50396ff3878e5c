from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.db import get_read_engine

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and database check")
def healthz() -> JSONResponse:
    try:  # the read engine: a read never waits for SQLite's writer (nor for the writer gate)
        with get_read_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any driver error means the database is unreachable
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})
