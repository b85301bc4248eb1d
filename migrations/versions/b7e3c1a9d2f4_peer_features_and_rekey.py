"""peer features (pool embargo, nurture setting, lock quota); company-name and email keys recomputed

pools.embargo_hours: customers entering a pool are claimable N hours after they enter (0: at once).
pools.nurture_allowed: 长期培育 is a pool setting (with nurture_max_days); its expiry is built in.
levels.lock_quota, customers.locked_at / locked_by_id: 锁定客户 (locked customers are never recycled).

The company-name key now folds Traditional into Simplified characters (OpenCC) and the email key drops
mailto:, invisible characters and display names: the stored keys (and grams) are recomputed with the same
function as ``flask crm rekey``.

Revision ID: b7e3c1a9d2f4
Revises: a17f4e2b9c01
Create Date: 2026-12-07 21:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7e3c1a9d2f4'
down_revision = 'a17f4e2b9c01'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embargo_hours', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('nurture_allowed', sa.Boolean(), server_default=sa.text('true'), nullable=False))

    with op.batch_alter_table('levels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lock_quota', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locked_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('locked_by_id', sa.Integer(), nullable=True))

    from crm.intake.grams import recompute_keys

    recompute_keys(op.get_bind())


def downgrade():
    # The recomputed keys stay (the old folding is a subset of the new); only the schema is undone.
    # Not batch mode: recreating customers on SQLite would lose its trigger (customers_keep_ledger) and
    # trip over the triggers of other tables that name it. SQLite ≥ 3.35 drops a plain column itself.
    for column in ('locked_by_id', 'locked_at'):
        op.execute(f'ALTER TABLE customers DROP COLUMN {column}')
    with op.batch_alter_table('levels', schema=None) as batch_op:
        batch_op.drop_column('lock_quota')
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.drop_column('nurture_allowed')
        batch_op.drop_column('embargo_hours')
