"""prompts and tasks can be retired (retired_at)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("prompts", "tasks"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("retired_at", app.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    for table in ("tasks", "prompts"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("retired_at")
