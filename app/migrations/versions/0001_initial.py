"""The integration's tables: CRMs, client_crm_auth, bitrix_events.

Each table is created only when it is missing: the CRMs table may be the host app's own (the
Bitrix24 row is added to it by the setup, not here), and installs made before migrations existed
already have all three.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = ("bitrix24",)
depends_on = None


def _missing(name: str) -> bool:
    return name not in sa.inspect(op.get_bind()).get_table_names()


def upgrade():
    if _missing("CRMs"):
        op.create_table(
            "CRMs",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
        )
    if _missing("client_crm_auth"):
        op.create_table(
            "client_crm_auth",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("client_id", sa.Integer(), nullable=False),
            sa.Column("crm_id", sa.Integer(), nullable=False),
            sa.Column("credentials", sa.Text(), nullable=False),
            sa.Column("portal_domain", sa.String(length=255), nullable=True),
            sa.Column("member_id", sa.String(length=64), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["crm_id"], ["CRMs.id"]),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("client_id", "crm_id", name="uq_client_crm_auth_client_crm"),
        )
        op.create_index("ix_client_crm_auth_client_id", "client_crm_auth", ["client_id"])
        op.create_index("ix_client_crm_auth_portal_domain", "client_crm_auth", ["portal_domain"])
        op.create_index("ix_client_crm_auth_member_id", "client_crm_auth", ["member_id"])
    if _missing("bitrix_events"):
        op.create_table(
            "bitrix_events",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("client_id", sa.Integer(), nullable=True),
            sa.Column("portal_domain", sa.String(length=255), nullable=True),
            sa.Column("event", sa.String(length=128), nullable=False),
            sa.Column("entity_type", sa.String(length=64), nullable=True),
            sa.Column("entity_id", sa.String(length=64), nullable=True),
            sa.Column("payload", sa.JSON(), nullable=False),
            sa.Column("dedupe_key", sa.String(length=64), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("dedupe_key"),
        )
        for column in ("client_id", "event", "status", "next_attempt_at"):
            op.create_index(f"ix_bitrix_events_{column}", "bitrix_events", [column])


def downgrade():
    op.drop_table("bitrix_events")
    op.drop_table("client_crm_auth")
    # CRMs may be the host app's table: left in place.
