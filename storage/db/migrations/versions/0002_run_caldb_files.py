"""run_caldb_files: the CALDB files each run resolved at its start

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 22:55:00

The orchestrator used to create this table itself on first use; a database it
created the table in keeps that table (same columns) and only gains the revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("run_caldb_files"):
        return
    op.create_table(
        "run_caldb_files",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("codename", sa.String(length=32), nullable=False),
        sa.Column("bucket", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_run_caldb_files_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "codename", name=op.f("pk_run_caldb_files")),
    )


def downgrade() -> None:
    op.drop_table("run_caldb_files")
