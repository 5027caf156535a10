"""Model types (scaling/modeltypes.py): whether a point trained CLIP, SigLIP or CoCa, so laws
can be fitted and compared per type. Runs stored before are CLIP's, unless their model's
name says otherwise (published ``coca_*`` and ``*SigLIP*`` checkpoints).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.add_column(sa.Column("model_type", sa.String(20), nullable=False, server_default="clip"))
        batch.create_index("ix_points_model_type", ["model_type"])
    op.execute("UPDATE points SET model_type = 'siglip' WHERE lower(model) LIKE '%siglip%'")
    op.execute("UPDATE points SET model_type = 'coca' WHERE lower(model) LIKE '%coca%'")


def downgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.drop_index("ix_points_model_type")
        batch.drop_column("model_type")
