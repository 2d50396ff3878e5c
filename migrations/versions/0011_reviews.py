"""a reviewer role, and adjudications: a reviewer's final label of a task

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _roles(roles: str) -> None:
    # SQLite cannot alter a CHECK constraint: batch mode copies the table with the new one.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_users_role"), type_="check")
        batch_op.create_check_constraint(op.f("ck_users_role"), f"role IN ({roles})")


def upgrade() -> None:
    _roles("'annotator', 'reviewer', 'admin'")
    op.create_table(
        "adjudications",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("reviewer_id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("choice", sa.String(length=16), nullable=True),
        sa.Column("chosen_id", BigId, nullable=True),
        sa.Column("strength", sa.Integer(), nullable=True),
        sa.Column("ranking", sa.JSON(), nullable=True),
        sa.Column("ratings", sa.JSON(), nullable=True),
        sa.Column("rewrite", sa.Text(), nullable=True),
        sa.Column("positions", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('pairwise', 'ranking', 'rating')", name=op.f("ck_adjudications_kind")),
        sa.ForeignKeyConstraint(["chosen_id"], ["generations.id"], name=op.f("fk_adjudications_chosen_id_generations")),
        sa.ForeignKeyConstraint(["reviewer_id"], ["users.id"], name=op.f("fk_adjudications_reviewer_id_users")),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_adjudications_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjudications")),
    )
    op.create_index(op.f("ix_adjudications_task_id"), "adjudications", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_adjudications_task_id"), table_name="adjudications")
    op.drop_table("adjudications")
    # the old constraint has no reviewer: reviewers go back to annotating
    op.execute("UPDATE users SET role = 'annotator' WHERE role = 'reviewer'")
    _roles("'annotator', 'admin'")
