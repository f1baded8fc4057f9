"""Measured-boot references per host group, set only by approved proposals.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

Written out by hand, like the others.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "boot_references",
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("proposal_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("group", name="pk_boot_references"),
    )


def downgrade() -> None:
    op.drop_table("boot_references")
