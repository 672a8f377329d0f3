"""who invited the inspector behind each evidence photo: inspection_evidence.invited_by_user_id, invited_by_name

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Earlier evidence stays without: its signed manifests were made without these facts.
    with op.batch_alter_table('inspection_evidence', schema=None) as batch_op:
        batch_op.add_column(sa.Column('invited_by_user_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('invited_by_name', sa.String(length=200), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_inspection_evidence_invited_by_user_id_users'), 'users', ['invited_by_user_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('inspection_evidence', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_inspection_evidence_invited_by_user_id_users'), type_='foreignkey')
        batch_op.drop_column('invited_by_name')
        batch_op.drop_column('invited_by_user_id')
