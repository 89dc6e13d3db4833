"""face tombstones (deletion)

Revision ID: 0011
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "face_tombstones",
        sa.Column("face_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("face_id"),
    )
    op.create_index("ix_face_tombstones_tenant_deleted", "face_tombstones", ["tenant_id", "deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_face_tombstones_tenant_deleted", table_name="face_tombstones")
    op.drop_table("face_tombstones")
