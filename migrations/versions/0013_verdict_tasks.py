"""a task can be a round's human verdict: its new policy's response beside the previous one's (verdict_round_id)

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verdict_round_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch_op.create_foreign_key(
            "fk_tasks_verdict_round_id_jobs", "jobs", ["verdict_round_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_index("ix_tasks_verdict_round_id", ["verdict_round_id"])


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_verdict_round_id")
        batch_op.drop_constraint("fk_tasks_verdict_round_id_jobs", type_="foreignkey")
        batch_op.drop_column("verdict_round_id")
