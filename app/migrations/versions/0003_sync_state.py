"""Reconciliation cursors: one row per client and entity (bitrix24_sync_state).

Revision ID: 0003_sync_state
Revises: 0002_app_installations
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_sync_state"
down_revision = "0002_app_installations"
branch_labels = None
depends_on = None

TABLE = "bitrix24_sync_state"


def upgrade():
    if TABLE in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.String(length=64), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("unannounced", sa.Integer(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id", "entity", name="uq_bitrix24_sync_state_client_entity"),
    )


def downgrade():
    op.drop_table(TABLE)
