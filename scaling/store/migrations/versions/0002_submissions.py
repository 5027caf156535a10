"""Submissions: one row per job array (or local batch) a launch submits, written before
it is submitted, so a launcher killed at any instant can be recovered.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("token", sa.String(100), primary_key=True),
        sa.Column(
            "family", sa.String(200), sa.ForeignKey("families.name", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("launcher", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("job_id", sa.String(100)),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("resources", sa.Text, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_submissions_family_state", "submissions", ["family", "state"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("submission", sa.String(100)))
        batch.create_index("ix_attempts_submission", ["submission"])
        batch.create_index("ix_attempts_state", ["state"])


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_state")
        batch.drop_index("ix_attempts_submission")
        batch.drop_column("submission")
    op.drop_table("submissions")
