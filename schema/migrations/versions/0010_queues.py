"""queues: images.queue (interactive or bulk) and the indexes admission control and micro-batching read

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch_op:
        batch_op.add_column(sa.Column("queue", sa.String(length=20), nullable=False, server_default="images"))
        batch_op.create_index("ix_images_tenant_status_queue", ["tenant_id", "status", "queue"], unique=False)
        batch_op.create_index(
            "ix_images_status_queue_updated", ["status", "queue", "updated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("images") as batch_op:
        batch_op.drop_index("ix_images_status_queue_updated")
        batch_op.drop_index("ix_images_tenant_status_queue")
        batch_op.drop_column("queue")
