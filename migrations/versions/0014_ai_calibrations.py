"""AI-feedback calibrations: an AI judge's agreement with human labels per task kind (n, agreed, rate and its
Wilson interval), measured by `label-ai` before it labels

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ai_calibrations",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("annotator_id", BIG_ID, nullable=False),
        sa.Column("judge", sa.String(length=200), nullable=False),
        sa.Column("job_id", BIG_ID, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("agreed", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('pairwise', 'ranking', 'rating')", name=op.f("ck_ai_calibrations_kind")),
        sa.ForeignKeyConstraint(
            ["annotator_id"], ["users.id"], name=op.f("fk_ai_calibrations_annotator_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_ai_calibrations_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_calibrations")),
    )
    with op.batch_alter_table("ai_calibrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ai_calibrations_annotator_id_created_at"), ["annotator_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ai_calibrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ai_calibrations_annotator_id_created_at"))
    op.drop_table("ai_calibrations")
