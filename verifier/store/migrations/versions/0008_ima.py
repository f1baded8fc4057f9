"""IMA runtime policies per host group, and each host's IMA progress in its boot.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

Written out by hand, like the others.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ima_policies",
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("proposal_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("group", name="pk_ima_policies"),
    )
    op.create_table(
        "ima_progress",
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("reset_count", sa.BigInteger(), nullable=False),
        sa.Column("entry_count", sa.BigInteger(), nullable=False),
        sa.Column("pcrs", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("host_id", name="pk_ima_progress"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.host_id"], name="fk_ima_progress_host_id_hosts"
        ),
        sa.CheckConstraint("entry_count >= 0", name=op.f("ck_ima_progress_entry_count")),
    )


def downgrade() -> None:
    op.drop_table("ima_progress")
    op.drop_table("ima_policies")
