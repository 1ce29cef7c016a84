"""The mirror: per-entity copies of a tenant's records, and the sync state's mirror columns.

Revision ID: 0004_mirror
Revises: 0003_sync_state
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_mirror"
down_revision = "0003_sync_state"
branch_labels = None
depends_on = None

STATE = "bitrix24_sync_state"
ENTITIES = ("contacts", "deals", "leads", "companies")
STATE_COLUMNS = (
    ("mirror", lambda: sa.Column("mirror", sa.Boolean(), nullable=False, server_default=sa.false())),
    ("phase", lambda: sa.Column("phase", sa.String(length=16), nullable=True)),
    ("checkpoint", lambda: sa.Column("checkpoint", sa.String(length=64), nullable=True)),
    ("copy_started_at", lambda: sa.Column("copy_started_at", sa.DateTime(timezone=True), nullable=True)),
    ("copied_at", lambda: sa.Column("copied_at", sa.DateTime(timezone=True), nullable=True)),
    ("ids_checked_at", lambda: sa.Column("ids_checked_at", sa.DateTime(timezone=True), nullable=True)),
    ("last_success_at", lambda: sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True)),
    ("errors", lambda: sa.Column("errors", sa.Integer(), nullable=False, server_default="0")),
    ("claim", lambda: sa.Column("claim", sa.String(length=64), nullable=True)),
    ("claimed_until", lambda: sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True)),
)


def upgrade():
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns(STATE)}
    with op.batch_alter_table(STATE) as batch:
        for name, column in STATE_COLUMNS:
            if name not in have:
                batch.add_column(column())
    for entity in ENTITIES:
        table = f"bitrix24_mirror_{entity}"
        if table in inspector.get_table_names():
            continue
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("client_id", sa.Integer(), nullable=False),
            sa.Column("bitrix_id", sa.BigInteger(), nullable=False),
            sa.Column("date_modify", sa.DateTime(timezone=True), nullable=True),
            sa.Column("deleted", sa.Boolean(), nullable=False),
            sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("data", sa.JSON(), nullable=False),
            sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("client_id", "bitrix_id", name=f"uq_{table}_client_record"),
        )


def downgrade():
    for entity in ENTITIES:
        op.drop_table(f"bitrix24_mirror_{entity}")
    with op.batch_alter_table(STATE) as batch:
        for name, _ in reversed(STATE_COLUMNS):
            batch.drop_column(name)
