import json
from pathlib import Path

import typer

from app.cli.session import cli_session
from app.services.jobs import get_job, job_to_dict, list_jobs, request_cancel

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="One JSON array."),
    status: str | None = typer.Option(None, "--status", help="Only jobs in this status."),
    kind: str | None = typer.Option(None, "--kind", help="Only jobs of this kind."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="At most this many, newest first."),
) -> None:
    """List jobs, newest first."""
    with cli_session() as db:
        rows = [job_to_dict(j) for j in list_jobs(db, status=status, kind=kind, limit=limit)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        p = r["progress"]
        progress = f"{p['done']:g}/{p['total']:g}" if p["total"] else "-"
        typer.echo(f"{r['id']:>6}  {r['kind']:<16} {r['status']:<10} {progress:>12}  {r['created_at']}")


@app.command("show")
def show(
    job_id: int = typer.Argument(..., help="Job id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Show one job: status, progress, metrics, result, error."""
    with cli_session() as db:
        job = get_job(db, job_id=job_id)
        data, log_name = job_to_dict(job), job.error_log
    if as_json:
        typer.echo(json.dumps(data))
        return
    p = data["progress"]
    lines = [
        f"job {data['id']}  {data['kind']}  {data['status']}"
        + ("  (cancel requested)" if data["cancel_requested"] and data["status"] == "running" else ""),
        f"attempts   {data['attempts']}/{data['max_attempts']}",
        f"progress   {p['done']:g}/{p['total']:g} {p['message']}".rstrip(),
        f"created    {data['created_at']}",
        f"started    {data['started_at'] or '-'}",
        f"finished   {data['finished_at'] or '-'}",
        f"output     {data['output_path'] or '-'}",
        f"config     {json.dumps(data['config'])}",
    ]
    if data["metrics"]:
        lines.append(f"metrics    {json.dumps(data['metrics'])}")
    if data["result"]:
        lines.append(f"result     {json.dumps(data['result'])}")
    if data["failed_stage"]:
        lines.append(f"failed in  {data['failed_stage']}")
    if data["error_summary"]:
        lines.append(f"reason     {data['error_summary']}")
    if data["log_url"]:
        lines.append(f"log        {Path(data['output_path']) / log_name}  (web: {data['log_url']})")
    if data["error"]:
        lines.append("error:\n" + data["error"])
    typer.echo("\n".join(lines))


@app.command("cancel")
def cancel(job_id: int = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a job: a queued one at once; a running one is stopped by its worker within seconds."""
    with cli_session() as db:
        job = request_cancel(db, job_id=job_id)
        status = job.status
    typer.echo(f"job {job_id}: {'cancelled' if status == 'cancelled' else 'cancel requested'}", err=True)
