"""Signed audit checkpoints: audit_checkpoints, insert-only.

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-08

Written out by hand, like 0001 to 0003. Each row is one signed statement about
the audit chain (its tree size and head hash at a time); the statement and
signature bytes are kept verbatim so that an auditor can re-verify them
without trusting the other columns, which only index them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", _TS, nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
        sa.CheckConstraint("tree_size >= 0", name=op.f("ck_audit_checkpoints_tree_size")),
    )
    op.create_index("ix_audit_checkpoints_tree_size", "audit_checkpoints", ["tree_size"])


def downgrade() -> None:
    op.drop_index("ix_audit_checkpoints_tree_size", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
