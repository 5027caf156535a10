"""Trajectories: a point says how it was trained along its samples-seen axis: its learning
rate schedule, the trunk it branched from, the share of its samples spent in its cooldown,
and whether it is a checkpoint of a constant-LR trunk rather than a finished run.

Revision ID: 0005
Revises: 0004
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.add_column(sa.Column("schedule", sa.String(20)))
        batch.add_column(sa.Column("trunk", sa.String(200)))
        batch.add_column(sa.Column("cooldown", sa.Float))
        batch.add_column(sa.Column("from_checkpoint", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.create_index("ix_points_trunk", ["trunk"])
    # Points recorded before: separate runs, whose schedule their resolved config holds.
    points = sa.table("points", sa.column("id", sa.String), sa.column("config", sa.Text),
                      sa.column("schedule", sa.String))  # fmt: skip
    conn = op.get_bind()
    for pid, config in conn.execute(sa.select(points.c.id, points.c.config)).all():
        try:
            schedule = (json.loads(config or "{}").get("train") or {}).get("lr_scheduler")
        except (ValueError, AttributeError):
            schedule = None
        if schedule:
            conn.execute(sa.update(points).where(points.c.id == pid).values(schedule=schedule))


def downgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.drop_index("ix_points_trunk")
        batch.drop_column("from_checkpoint")
        batch.drop_column("cooldown")
        batch.drop_column("trunk")
        batch.drop_column("schedule")
