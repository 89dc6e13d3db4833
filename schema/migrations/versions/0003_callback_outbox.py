"""callback outbox: when each pending callback is next due

Revision ID: 0003
Revises: 0011
Create Date: 2026-12-01 21:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_next_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_images_callback_due", ["callback_status", "callback_next_at"], unique=False)
    # Callbacks of jobs that finished before this revision are due now.
    op.execute(
        "UPDATE images SET callback_next_at = updated_at "
        "WHERE callback_status = 'pending' AND status IN ('done', 'error')"
    )


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_callback_due")
        batch_op.drop_column("callback_next_at")
