"""Sizes for the error surface: a point's model size in parameters and its data set's size
in unique samples (how often its samples seen repeat the data).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.add_column(sa.Column("params", sa.Float))
        batch.add_column(sa.Column("data_size", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.drop_column("data_size")
        batch.drop_column("params")
