"""round numbers: rounds are numbered 1, 2, 3 ... in their own sequence, not by job id

Revision ID: 0003
Revises: 0002
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round_number", sa.Integer(), nullable=True))
    # the rounds already run get their numbers in the order they were started
    conn = op.get_bind()
    ids = conn.execute(sa.text("SELECT id FROM jobs WHERE kind = 'round' ORDER BY id")).scalars().all()
    for number, job_id in enumerate(ids, start=1):
        conn.execute(sa.text("UPDATE jobs SET round_number = :n WHERE id = :id"), {"n": number, "id": job_id})
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_jobs_round_number"), ["round_number"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_jobs_round_number"), type_="unique")
        batch_op.drop_column("round_number")
