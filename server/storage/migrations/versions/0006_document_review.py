"""per-material review (材料预审): documents.review_state, review_reason, reviewed_by, reviewed_at

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 01:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.storage.types


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing documents start as pending review: nobody has looked at them under the new rules.
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_state', sa.String(length=16), server_default='pending', nullable=False))
        batch_op.add_column(sa.Column('review_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('reviewed_by', sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column('reviewed_at', server.storage.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f('fk_documents_reviewed_by_users'), 'users', ['reviewed_by'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_documents_reviewed_by_users'), type_='foreignkey')
        batch_op.drop_column('reviewed_at')
        batch_op.drop_column('reviewed_by')
        batch_op.drop_column('review_reason')
        batch_op.drop_column('review_state')
