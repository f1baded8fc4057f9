"""Trust anchors and break-glass grants, both filled only by approved proposals.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Written out by hand, like the others.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trust_anchors",
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("added_at", _TS, nullable=False),
        sa.Column("proposal_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("purpose", "fingerprint", name="pk_trust_anchors"),
    )
    op.create_table(
        "break_glass_grants",
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("manifest_digest", sa.LargeBinary(), nullable=False),
        sa.Column("granted_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("proposal_id", sa.String(32), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name="pk_break_glass_grants"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.host_id"], name="fk_break_glass_grants_host_id_hosts"
        ),
        sa.ForeignKeyConstraint(
            ["manifest_digest"],
            ["model_versions.manifest_digest"],
            name="fk_break_glass_grants_manifest_digest_model_versions",
        ),
        sa.CheckConstraint("expires_at > granted_at", name=op.f("ck_break_glass_grants_expiry")),
    )
    op.create_index(
        "ix_break_glass_grants_host_id_manifest_digest",
        "break_glass_grants",
        ["host_id", "manifest_digest"],
    )


def downgrade() -> None:
    op.drop_index("ix_break_glass_grants_host_id_manifest_digest", "break_glass_grants")
    op.drop_table("break_glass_grants")
    op.drop_table("trust_anchors")
