"""Stages: a point's training and its evaluation are jobs of their own, so submissions and
attempts say which they are (and an evaluation which training it follows); points keep the
throughput and model-FLOPs utilisation their training reached, and why they failed.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("stage", sa.String(10), nullable=False, server_default="train"))
        batch.add_column(sa.Column("after", sa.String(100)))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("stage", sa.String(10), nullable=False, server_default="train"))
    with op.batch_alter_table("points") as batch:
        batch.add_column(sa.Column("samples_per_s", sa.Float))
        batch.add_column(sa.Column("mfu", sa.Float))
        batch.add_column(sa.Column("error", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.drop_column("error")
        batch.drop_column("mfu")
        batch.drop_column("samples_per_s")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("stage")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("after")
        batch.drop_column("stage")
