"""The first schema: families, points, attempts, metrics.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "families",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "points",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False, index=True),
        sa.Column("data", sa.String(200), nullable=False, index=True),
        sa.Column("samples_seen", sa.BigInteger, nullable=False, index=True),
        sa.Column("gmacs_per_sample", sa.Float),
        sa.Column("compute_gmacs", sa.Float, index=True),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "family_points",
        sa.Column(
            "family", sa.String(200), sa.ForeignKey("families.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "point_id", sa.String(200), sa.ForeignKey("points.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_index("ix_family_points_point", "family_points", ["point_id"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("point_id", sa.String(200), sa.ForeignKey("points.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("launcher", sa.String(20), nullable=False),
        sa.Column("job_id", sa.String(100)),
        sa.Column("array_index", sa.Integer),
        sa.Column("state", sa.String(30), nullable=False),
        sa.Column("node", sa.String(200)),
        sa.Column("started_at", sa.DateTime),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("exit_reason", sa.Text),
        sa.Column("log_path", sa.Text),
        sa.UniqueConstraint("point_id", "key", name="uq_attempts_point_key"),
    )
    op.create_index("ix_attempts_point_id", "attempts", ["point_id"])
    op.create_table(
        "metrics",
        sa.Column(
            "point_id", sa.String(200), sa.ForeignKey("points.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("dataset", sa.String(200), primary_key=True),
        sa.Column("metric", sa.String(200), primary_key=True),
        sa.Column("value", sa.Float),
        sa.Column("reason", sa.Text),
        # Rows are found by their key: SQLite keeps them in it, with no rowid b-tree.
        sqlite_with_rowid=False,
    )
    op.create_index("ix_metrics_dataset_metric_value", "metrics", ["dataset", "metric", "value"])


def downgrade() -> None:
    for table in ("metrics", "attempts", "family_points", "points", "families"):
        op.drop_table(table)
