"""annotation guidelines: versioned markdown for the project and per task batch, which version each annotation was
made under, and which versions each annotator has been shown

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "guideline_versions",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by_id", BIG_ID, nullable=True),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_guideline_versions_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_guideline_versions_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guideline_versions")),
    )
    with op.batch_alter_table("guideline_versions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_guideline_versions_project_version",
            ["version"],
            unique=True,
            sqlite_where=sa.text("job_id IS NULL"),
            postgresql_where=sa.text("job_id IS NULL"),
        )
        batch_op.create_index(
            "uq_guideline_versions_batch_version",
            ["job_id", "version"],
            unique=True,
            sqlite_where=sa.text("job_id IS NOT NULL"),
            postgresql_where=sa.text("job_id IS NOT NULL"),
        )
    op.create_table(
        "guideline_reads",
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("guideline_version_id", BIG_ID, nullable=False),
        sa.Column("read_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["guideline_version_id"],
            ["guideline_versions.id"],
            name=op.f("fk_guideline_reads_guideline_version_id_guideline_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_guideline_reads_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "guideline_version_id", name=op.f("pk_guideline_reads")),
    )
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("guideline_version_id", BIG_ID, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_annotations_guideline_version_id_guideline_versions"),
            "guideline_versions",
            ["guideline_version_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_annotations_guideline_version_id_guideline_versions"), type_="foreignkey"
        )
        batch_op.drop_column("guideline_version_id")
    op.drop_table("guideline_reads")
    with op.batch_alter_table("guideline_versions", schema=None) as batch_op:
        batch_op.drop_index("uq_guideline_versions_batch_version")
        batch_op.drop_index("uq_guideline_versions_project_version")
    op.drop_table("guideline_versions")
