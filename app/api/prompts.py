"""POST /api/v1/prompts (a JSON list of prompt objects, or a JSONL/CSV file upload), GET /api/v1/prompts. Admins."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from app.deps import ApiAdmin, SessionDep, SettingsDep
from app.inputs import DbId, Offset
from app.services.prompt_import import PromptImportError, import_prompt_objects, import_prompts
from app.services.prompts import list_prompts, prompt_display_text
from app.services.retirement import MAX_IDS, retire_prompts

router = APIRouter(prefix="/api/v1", tags=["prompts"])


def _refusal(exc: PromptImportError) -> HTTPException:
    return HTTPException(status_code=422, detail={"message": str(exc), "errors": exc.lines()})


@router.post("/prompts", summary="Import prompts (all or nothing; duplicates skipped and counted)")
async def post_prompts(request: Request, _admin: ApiAdmin, db: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Body: `[{"prompt": ...} | {"messages": [...]}, ...]` or `{"prompts": [...]}` (JSON), or a multipart
    upload `file` (JSONL or CSV, named .jsonl/.csv)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(status_code=422, detail="send the file in a multipart field named `file`")
            data = await upload.read(settings.max_upload_bytes + 1)
            if len(data) > settings.max_upload_bytes:
                raise HTTPException(
                    status_code=413, detail=f"the file is over the {settings.max_upload_bytes} byte limit"
                )
            result = import_prompts(db, data=data, name=upload.filename or "upload", source="api")
        else:
            body = await request.body()
            if len(body) > settings.max_upload_bytes:
                raise HTTPException(
                    status_code=413, detail=f"the body is over the {settings.max_upload_bytes} byte limit"
                )
            try:
                payload: Any = json.loads(body or b"null")
            except ValueError:
                raise HTTPException(status_code=422, detail="the body must be JSON: a list of prompt objects") from None
            if isinstance(payload, dict) and isinstance(payload.get("prompts"), list):
                payload = payload["prompts"]
            if not isinstance(payload, list):
                raise HTTPException(status_code=422, detail="the body must be a JSON list of prompt objects")
            result = import_prompt_objects(db, objects=payload, source="api")
    except PromptImportError as exc:
        db.rollback()
        raise _refusal(exc) from None
    db.commit()
    return result.as_dict()


@router.get("/prompts", summary="Prompt counts per split and the latest prompts")
def get_prompts(_admin: ApiAdmin, db: SessionDep, limit: int = 50, offset: Offset = 0) -> dict[str, Any]:
    limit = max(1, min(limit, 500))
    listing = list_prompts(db, limit=limit, offset=offset)
    return {
        "counts": listing.counts,
        "prompts": [
            {
                "id": p.id,
                "prompt": p.text,
                "messages": p.messages,
                "display": prompt_display_text(p),
                "tags": p.tags,
                "split": p.split,
                "source": p.source,
                "created_at": p.created_at.isoformat(),
            }
            for p in listing.prompts
        ],
    }


class RetireIn(BaseModel):
    ids: list[DbId] = Field(min_length=1, max_length=MAX_IDS, description="Ids to retire (all must exist).")


class RetireOut(BaseModel):
    retired: int = Field(description="Newly retired.")
    already: int = Field(description="Were retired before.")
    tasks_retired: int = Field(description="Tasks retired with their prompts.")


@router.post(
    "/prompts/retire",
    response_model=RetireOut,
    summary="Retire prompts and their tasks (kept, never shown, trained on or exported again)",
    responses={404: {"description": "An id does not exist; nothing was retired"}},
)
def post_retire_prompts(body: RetireIn, _admin: ApiAdmin, db: SessionDep) -> dict[str, int]:
    result = retire_prompts(db, ids=sorted(set(body.ids)))
    db.commit()
    return result.as_dict()
