"""Runs whose samples seen are not known (published checkpoints whose tag does not say):
samples_seen may be empty, and ``no_compute`` says why such a run is left out of compute laws.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.alter_column("samples_seen", existing_type=sa.BigInteger, nullable=True)
        batch.add_column(sa.Column("no_compute", sa.Text))


def downgrade() -> None:
    op.execute("DELETE FROM points WHERE samples_seen IS NULL")
    with op.batch_alter_table("points") as batch:
        batch.drop_column("no_compute")
        batch.alter_column("samples_seen", existing_type=sa.BigInteger, nullable=False)
