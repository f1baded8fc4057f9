"""Initial schema: hosts, enrollments, reference values, attestation history, events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out by hand rather than from the ORM metadata, so that this revision
keeps creating exactly this schema however the models change later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ek_public", sa.LargeBinary(), nullable=True),
        sa.Column("ek_certificate", sa.LargeBinary(), nullable=True),
        sa.Column("ak_public", sa.LargeBinary(), nullable=True),
        sa.Column("ak_name", sa.LargeBinary(), nullable=True),
        sa.Column("registered_at", _TS, nullable=False),
        sa.Column("enrolled_at", _TS, nullable=True),
        sa.Column("last_attestation_at", _TS, nullable=True),
        sa.Column("last_clock", sa.BigInteger(), nullable=True),
        sa.Column("last_reset_count", sa.BigInteger(), nullable=True),
        sa.Column("last_restart_count", sa.BigInteger(), nullable=True),
        sa.Column("last_reasons", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("host_id", name="pk_hosts"),
        sa.CheckConstraint(
            "status IN ('registered', 'enrolled', 'trusted', 'untrusted')",
            name="ck_hosts_status",
        ),
        sa.CheckConstraint(
            "(last_clock IS NULL AND last_reset_count IS NULL AND last_restart_count IS NULL)"
            " OR (last_clock IS NOT NULL AND last_reset_count IS NOT NULL"
            " AND last_restart_count IS NOT NULL)",
            name="ck_hosts_clock",
        ),
    )
    op.create_table(
        "enrollments",
        sa.Column("enrollment_id", sa.String(32), nullable=False),
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("ek_public", sa.LargeBinary(), nullable=False),
        sa.Column("ek_certificate", sa.LargeBinary(), nullable=False),
        sa.Column("ak_public", sa.LargeBinary(), nullable=False),
        sa.Column("ak_name", sa.LargeBinary(), nullable=False),
        sa.Column("secret_digest", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", name="pk_enrollments"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.host_id"], name="fk_enrollments_host_id_hosts"
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'succeeded', 'failed', 'expired')",
            name="ck_enrollments_state",
        ),
    )
    op.create_index("ix_enrollments_host_id_state", "enrollments", ["host_id", "state"])
    op.create_table(
        "reference_sets",
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("group", name="pk_reference_sets"),
    )
    op.create_table(
        "reference_values",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("bank", sa.String(16), nullable=False),
        sa.Column("pcr", sa.Integer(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reference_values"),
        sa.ForeignKeyConstraint(
            ["group"], ["reference_sets.group"], name="fk_reference_values_group_reference_sets"
        ),
        sa.UniqueConstraint("group", "bank", "pcr", name="uq_reference_values_group_bank_pcr"),
    )
    op.create_table(
        "attestation_results",
        sa.Column("result_id", sa.String(32), nullable=False),
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("challenge_id", sa.String(255), nullable=False),
        sa.Column("appraised_at", _TS, nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("checks_run", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("result_id", name="pk_attestation_results"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.host_id"], name="fk_attestation_results_host_id_hosts"
        ),
    )
    op.create_index(
        "ix_attestation_results_host_id_appraised_at",
        "attestation_results",
        ["host_id", "appraised_at"],
    )
    op.create_table(
        "host_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_host_events"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.host_id"], name="fk_host_events_host_id_hosts"
        ),
    )
    op.create_index("ix_host_events_host_id_at", "host_events", ["host_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_host_events_host_id_at", table_name="host_events")
    op.drop_table("host_events")
    op.drop_index("ix_attestation_results_host_id_appraised_at", table_name="attestation_results")
    op.drop_table("attestation_results")
    op.drop_table("reference_values")
    op.drop_table("reference_sets")
    op.drop_index("ix_enrollments_host_id_state", table_name="enrollments")
    op.drop_table("enrollments")
    op.drop_table("hosts")
