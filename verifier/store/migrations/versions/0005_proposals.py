"""The two-person rule: proposals and their decisions; reviews gain their risk evaluation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Written out by hand, like the others. Reviews recorded before this revision
get empty categories, controls, findings and approvers (they were recorded by
a single operator; the release gate still honours them until they expire).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)
_STATES = "state IN ('pending', 'applied', 'rejected', 'expired', 'stale')"


def upgrade() -> None:
    op.create_table(
        "proposals",
        sa.Column("proposal_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("proposer", sa.String(255), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("base_state", sa.JSON(), nullable=True),
        sa.Column("base_digest", sa.LargeBinary(), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("proposed_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("outcome_detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("proposal_id", name="pk_proposals"),
        sa.CheckConstraint(_STATES, name=op.f("ck_proposals_state")),
        sa.CheckConstraint("required_approvals >= 0", name=op.f("ck_proposals_required_approvals")),
        sa.CheckConstraint("expires_at > proposed_at", name=op.f("ck_proposals_expiry")),
    )
    op.create_index("ix_proposals_state", "proposals", ["state"])
    op.create_index("ix_proposals_proposed_at", "proposals", ["proposed_at"])
    op.create_table(
        "proposal_decisions",
        sa.Column("proposal_id", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("approve", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("proposal_id", "actor", name="pk_proposal_decisions"),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["proposals.proposal_id"],
            name="fk_proposal_decisions_proposal_id_proposals",
        ),
    )
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(
            sa.Column("categories_assessed", sa.JSON(), nullable=False, server_default="[]")
        )
        batch.add_column(
            sa.Column("required_controls", sa.JSON(), nullable=False, server_default="[]")
        )
        batch.add_column(sa.Column("findings", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("approvers", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("proposal_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        for column in (
            "proposal_id",
            "approvers",
            "findings",
            "required_controls",
            "categories_assessed",
        ):
            batch.drop_column(column)
    op.drop_table("proposal_decisions")
    op.drop_index("ix_proposals_proposed_at", "proposals")
    op.drop_index("ix_proposals_state", "proposals")
    op.drop_table("proposals")
