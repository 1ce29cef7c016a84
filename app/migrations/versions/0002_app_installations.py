"""App mode: one row per installation of our Bitrix24 app on a portal (bitrix24_app_installations).

Revision ID: 0002_app_installations
Revises: 0001_initial
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_app_installations"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

TABLE = "bitrix24_app_installations"


def upgrade():
    if TABLE in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=True),
        sa.Column("client_endpoint", sa.String(length=512), nullable=True),
        sa.Column("credentials", sa.Text(), nullable=True),
        sa.Column("scope", sa.String(length=1024), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("problem", sa.String(length=64), nullable=True),
        sa.Column("problem_detail", sa.Text(), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("installs", sa.Integer(), nullable=False),
        sa.Column("address_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connector", sa.String(length=64), nullable=True),
        sa.Column("offline_process_id", sa.String(length=64), nullable=True),
        sa.Column("offline_claim", sa.String(length=64), nullable=True),
        sa.Column("offline_claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_holder", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("member_id"),
        sa.UniqueConstraint("client_id"),
    )


def downgrade():
    op.drop_table(TABLE)
