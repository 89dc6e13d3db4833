"""Face++ FaceSets and face user ids (api/vendors/facepp.py)

Revision ID: 0012
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "facepp_facesets",
        sa.Column("token", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("outer_id", sa.String(255), nullable=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("user_data", sa.Text(), nullable=False),
        sa.Column("tags", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token"),
        sa.UniqueConstraint("tenant_id", "outer_id", name="uq_facepp_facesets_outer_id"),
    )
    op.create_index("ix_facepp_facesets_tenant_id", "facepp_facesets", ["tenant_id"])
    op.create_table(
        "facepp_user_ids",
        sa.Column("face_uid", sa.String(36), sa.ForeignKey("faces.uid", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("face_uid"),
    )


def downgrade() -> None:
    op.drop_table("facepp_user_ids")
    op.drop_index("ix_facepp_facesets_tenant_id", table_name="facepp_facesets")
    op.drop_table("facepp_facesets")
