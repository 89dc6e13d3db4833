"""face crops: the face cut at processing time, served by face images and transforms

Revision ID: 0008
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "face_crops",
        sa.Column("face_uid", sa.String(length=36), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.Column("left", sa.Float(), nullable=False),
        sa.Column("top", sa.Float(), nullable=False),
        sa.Column("scale", sa.Float(), nullable=False),
        sa.Column("landmarks5", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["face_uid"], ["faces.uid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("face_uid"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE face_crops ALTER COLUMN jpeg SET STORAGE EXTERNAL"
        )  # JPEG: no TOAST compression


def downgrade() -> None:
    op.drop_table("face_crops")
