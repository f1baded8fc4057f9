"""Model versions, sites, reviews, binding keys, key releases; host sites and quarantine.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Written out by hand, like 0001. The hosts table gains a ``site`` column and a
wider status check; SQLite cannot alter a CHECK constraint, so batch mode
rebuilds the table there from the 0001 definition below (the runner turns
foreign key enforcement off around the migration and checks every key before
committing, the procedure SQLite documents for rebuilding a referenced table).

Constraint names are wrapped in ``op.f`` so the naming convention of the
models is not applied to them a second time (0001's checks were, see below).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)
_OLD_STATUSES = "status IN ('registered', 'enrolled', 'trusted', 'untrusted')"
# 0001 named its checks before the naming convention prefixed them once more;
# the prefixed names are the ones in the databases (the clock check keeps its).
_OLD_STATUS_CHECK = "ck_hosts_ck_hosts_status"
_NEW_STATUSES = "status IN ('registered', 'enrolled', 'trusted', 'untrusted', 'quarantined')"


def _hosts_0001() -> sa.Table:
    """The hosts table exactly as 0001 created it (batch mode's copy source on SQLite)."""
    return sa.Table(
        "hosts",
        sa.MetaData(),
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
        sa.CheckConstraint(_OLD_STATUSES, name=_OLD_STATUS_CHECK),
        sa.CheckConstraint(
            "(last_clock IS NULL AND last_reset_count IS NULL AND last_restart_count IS NULL)"
            " OR (last_clock IS NOT NULL AND last_reset_count IS NOT NULL"
            " AND last_restart_count IS NOT NULL)",
            name="ck_hosts_ck_hosts_clock",
        ),
    )


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("site_id", sa.String(255), nullable=False),
        sa.Column("cleared_risk_tiers", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("site_id", name="pk_sites"),
    )
    op.create_table(
        "model_versions",
        sa.Column("manifest_digest", sa.LargeBinary(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("risk_tier", sa.String(255), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=False),
        sa.Column("manifest_signature", sa.LargeBinary(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("plaintext_bytes", sa.BigInteger(), nullable=False),
        sa.Column("added_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("manifest_digest", name="pk_model_versions"),
        sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
        sa.CheckConstraint("file_count > 0", name=op.f("ck_model_versions_file_count")),
        sa.CheckConstraint("plaintext_bytes >= 0", name=op.f("ck_model_versions_plaintext_bytes")),
    )
    op.create_table(
        "model_data_keys",
        sa.Column("manifest_digest", sa.LargeBinary(), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("manifest_digest", "file_id", name="pk_model_data_keys"),
        sa.ForeignKeyConstraint(
            ["manifest_digest"],
            ["model_versions.manifest_digest"],
            name="fk_model_data_keys_manifest_digest_model_versions",
        ),
    )
    op.create_table(
        "reviews",
        sa.Column("review_id", sa.String(32), nullable=False),
        sa.Column("manifest_digest", sa.LargeBinary(), nullable=False),
        sa.Column("site_id", sa.String(255), nullable=False),
        sa.Column("risk_tier", sa.String(255), nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("review_id", name="pk_reviews"),
        sa.ForeignKeyConstraint(
            ["manifest_digest"],
            ["model_versions.manifest_digest"],
            name="fk_reviews_manifest_digest_model_versions",
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.site_id"], name="fk_reviews_site_id_sites"),
        sa.CheckConstraint("expires_at > recorded_at", name=op.f("ck_reviews_expiry")),
    )
    op.create_index(
        "ix_reviews_manifest_digest_site_id_expires_at",
        "reviews",
        ["manifest_digest", "site_id", "expires_at"],
    )
    op.create_table(
        "binding_keys",
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("public", sa.LargeBinary(), nullable=False),
        sa.Column("policy_digest", sa.LargeBinary(), nullable=False),
        sa.Column("pcr_selection", sa.JSON(), nullable=False),
        sa.Column("certified_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("host_id", name="pk_binding_keys"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.host_id"], name="fk_binding_keys_host_id_hosts"
        ),
    )
    op.create_table(
        "releases",
        sa.Column("release_id", sa.String(32), nullable=False),
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("manifest_digest", sa.LargeBinary(), nullable=False),
        sa.Column("model", sa.String(511), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("released_at", _TS, nullable=False),
        sa.Column("lease_expires_at", _TS, nullable=False),
        sa.Column("renewed_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("erased_at", _TS, nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=False),
        sa.Column("erase_qualifying_data", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("release_id", name="pk_releases"),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.host_id"], name="fk_releases_host_id_hosts"),
        sa.ForeignKeyConstraint(
            ["manifest_digest"],
            ["model_versions.manifest_digest"],
            name="fk_releases_manifest_digest_model_versions",
        ),
        sa.CheckConstraint(
            "state IN ('released', 'revoked', 'erased', 'expired')", name=op.f("ck_releases_state")
        ),
        sa.CheckConstraint(
            "(state = 'released' AND revoked_at IS NULL AND erased_at IS NULL)"
            " OR (state IN ('revoked', 'expired') AND revoked_at IS NOT NULL"
            " AND erased_at IS NULL)"
            " OR (state = 'erased' AND revoked_at IS NOT NULL AND erased_at IS NOT NULL)",
            name=op.f("ck_releases_timestamps"),
        ),
    )
    op.create_index("ix_releases_host_id_state", "releases", ["host_id", "state"])
    op.create_index("ix_releases_state_lease_expires_at", "releases", ["state", "lease_expires_at"])
    op.create_index("ix_releases_manifest_digest", "releases", ["manifest_digest"])
    op.create_table(
        "release_denials",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("manifest_digest", sa.LargeBinary(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_release_denials"),
    )
    op.create_index("ix_release_denials_host_id_at", "release_denials", ["host_id", "at"])

    # recreate="auto": plain ALTERs on PostgreSQL, a copy-and-move rebuild on SQLite.
    with op.batch_alter_table("hosts", copy_from=_hosts_0001(), recreate="auto") as batch:
        batch.add_column(sa.Column("site", sa.String(255), nullable=True))
        batch.create_foreign_key(op.f("fk_hosts_site_sites"), "sites", ["site"], ["site_id"])
        batch.drop_constraint(op.f(_OLD_STATUS_CHECK), type_="check")
        batch.create_check_constraint(op.f("ck_hosts_status"), _NEW_STATUSES)


def downgrade() -> None:
    # 0001 knows no quarantine; such a host falls back to untrusted.
    op.execute("UPDATE hosts SET status = 'untrusted' WHERE status = 'quarantined'")
    hosts = _hosts_0001()
    hosts.append_column(sa.Column("site", sa.String(255), nullable=True))
    hosts.append_constraint(
        sa.ForeignKeyConstraint(["site"], ["sites.site_id"], name="fk_hosts_site_sites")
    )
    for constraint in list(hosts.constraints):
        if constraint.name == _OLD_STATUS_CHECK:
            hosts.constraints.remove(constraint)
    hosts.append_constraint(sa.CheckConstraint(_NEW_STATUSES, name="ck_hosts_status"))
    with op.batch_alter_table("hosts", copy_from=hosts, recreate="auto") as batch:
        batch.drop_constraint(op.f("fk_hosts_site_sites"), type_="foreignkey")
        batch.drop_column("site")
        batch.drop_constraint(op.f("ck_hosts_status"), type_="check")
        batch.create_check_constraint(op.f(_OLD_STATUS_CHECK), _OLD_STATUSES)
    op.drop_index("ix_release_denials_host_id_at", table_name="release_denials")
    op.drop_table("release_denials")
    op.drop_index("ix_releases_manifest_digest", table_name="releases")
    op.drop_index("ix_releases_state_lease_expires_at", table_name="releases")
    op.drop_index("ix_releases_host_id_state", table_name="releases")
    op.drop_table("releases")
    op.drop_table("binding_keys")
    op.drop_index("ix_reviews_manifest_digest_site_id_expires_at", table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("model_data_keys")
    op.drop_table("model_versions")
    op.drop_table("sites")
