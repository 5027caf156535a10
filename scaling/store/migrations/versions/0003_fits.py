"""Fit history: one row per fitted law (family, selection, metric, frontier), so users see
how α and β moved as points landed.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "fits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "family", sa.String(200), sa.ForeignKey("families.name", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("selection", sa.Text, nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("method", sa.String(20), nullable=False),
        sa.Column("bins", sa.Integer, nullable=False),
        sa.Column("fitted_at", sa.DateTime, nullable=False),
        sa.Column("n_runs", sa.Integer, nullable=False),
        sa.Column("n_frontier", sa.Integer, nullable=False),
        sa.Column("alpha", sa.Float, nullable=False),
        sa.Column("alpha_low", sa.Float),
        sa.Column("alpha_high", sa.Float),
        sa.Column("beta", sa.Float, nullable=False),
        sa.Column("beta_low", sa.Float),
        sa.Column("beta_high", sa.Float),
        sa.Column("level", sa.Float, nullable=False),
        sa.Column("r2", sa.Float, nullable=False),
        sa.Column("n_boot", sa.Integer, nullable=False),
        sa.Column("inputs", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
    )
    op.create_index("ix_fits_key", "fits", ["family", "dataset", "metric", "fitted_at"])


def downgrade() -> None:
    op.drop_table("fits")
