"""jobs say which stage failed, the failure's meaningful line and its log

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_stage", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("error_summary", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("error_log", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("error_log")
        batch_op.drop_column("error_summary")
        batch_op.drop_column("failed_stage")
