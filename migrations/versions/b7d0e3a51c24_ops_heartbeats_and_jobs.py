"""ops: process heartbeats and the last run of each background job

Revision ID: b7d0e3a51c24
Revises: 93cb77183bb3
Create Date: 2026-12-07 20:30:00.000000

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = 'b7d0e3a51c24'
down_revision = '93cb77183bb3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('ops_heartbeats',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=120), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('seen_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ops_heartbeats')),
    sa.UniqueConstraint('role', 'host', 'pid', name=op.f('uq_ops_heartbeats_role_host_pid'))
    )
    with op.batch_alter_table('ops_heartbeats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ops_heartbeats_seen_at'), ['seen_at'], unique=False)

    op.create_table('ops_jobs',
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_ok_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_ops_jobs'))
    )


def downgrade():
    op.drop_table('ops_jobs')
    with op.batch_alter_table('ops_heartbeats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ops_heartbeats_seen_at'))
    op.drop_table('ops_heartbeats')
