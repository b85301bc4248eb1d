"""delivery endpoint backoff; where a delivery went

A delivery endpoint that cannot be reached backs off as a whole (``endpoint_backoffs``) instead of charging
every waiting reminder an attempt; each delivery records the endpoint its last attempt went to (the admin
page filters by it).

Revision ID: a17f4e2b9c01
Revises: b7d0e3a51c24
Create Date: 2026-12-07 21:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a17f4e2b9c01'
down_revision = 'b7d0e3a51c24'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('endpoint_backoffs',
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('retry_at', sa.DateTime(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_endpoint_backoffs'))
    )
    with op.batch_alter_table('reminder_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('endpoint', sa.String(length=40), nullable=True))


def downgrade():
    with op.batch_alter_table('reminder_deliveries', schema=None) as batch_op:
        batch_op.drop_column('endpoint')
    op.drop_table('endpoint_backoffs')
