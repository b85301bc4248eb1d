"""peer features; company-name and email keys recomputed

The company-name key now folds Traditional into Simplified characters (OpenCC) and the email key drops
mailto:, invisible characters and display names: the stored keys (and grams) are recomputed with the same
function as ``flask crm rekey``.

Revision ID: b7e3c1a9d2f4
Revises: 93cb77183bb3
Create Date: 2026-12-07 21:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7e3c1a9d2f4'
down_revision = '93cb77183bb3'
branch_labels = None
depends_on = None


def upgrade():
    from crm.intake.grams import recompute_keys

    recompute_keys(op.get_bind())


def downgrade():
    # The new keys are a superset of the old folding; nothing to undo for the data.
    pass
