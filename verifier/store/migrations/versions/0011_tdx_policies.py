"""Intel TDX policies per host group.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-14

Written out by hand, like the others.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tdx_policies",
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("proposal_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("group", name="pk_tdx_policies"),
    )


def downgrade() -> None:
    op.drop_table("tdx_policies")
