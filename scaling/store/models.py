"""The results store's tables, as typed SQLAlchemy 2 ORM models."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false


class Base(DeclarativeBase):
    pass


class Family(Base):
    """A named set of points: a sweep, or a published table imported for comparison."""

    __tablename__ = "families"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # "sweep" or "import"
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class Point(Base):
    """A grid point (or an imported run): what was trained and its compute."""

    __tablename__ = "points"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    data: Mapped[str] = mapped_column(String(200), index=True)
    samples_seen: Mapped[int | None] = mapped_column(BigInteger, index=True)  # None: not known
    gmacs_per_sample: Mapped[float | None] = mapped_column(Float)
    compute_gmacs: Mapped[float | None] = mapped_column(Float, index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # planned, succeeded, failed, ...
    source: Mapped[str] = mapped_column(String(20))  # "run" or "import"
    config: Mapped[str] = mapped_column(Text, default="{}")  # the resolved point, as JSON
    updated_at: Mapped[datetime]
    samples_per_s: Mapped[float | None] = mapped_column(Float)  # training throughput, all ranks
    mfu: Mapped[float | None] = mapped_column(Float)  # model-FLOPs utilisation of training (GPUs)
    error: Mapped[str | None] = mapped_column(Text)  # why the point failed (its last attempt's reason)
    # How its samples-seen axis was trained (scaling/trajectory.py): the learning-rate schedule,
    # the trunk a trajectory's point continues, its cooldown's share of its samples seen, and
    # whether it is a constant-LR checkpoint of a trunk rather than a finished run.
    schedule: Mapped[str | None] = mapped_column(String(20))
    trunk: Mapped[str | None] = mapped_column(String(200), index=True)
    cooldown: Mapped[float | None] = mapped_column(Float)
    from_checkpoint: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What was trained: clip, siglip or coca (scaling/modeltypes.py).
    model_type: Mapped[str] = mapped_column(String(20), index=True, default="clip", server_default="clip")
    # For the error surface E(N, D): the model's parameters, and the unique samples of its data
    # set (samples seen beyond it are repeats, worth less: scaling/fit/surface.py).
    params: Mapped[float | None] = mapped_column(Float)
    data_size: Mapped[int | None] = mapped_column(BigInteger)
    # Why an imported run's compute is not known (its samples seen were not published): it is
    # listed, and left out of compute laws with this reason.
    no_compute: Mapped[str | None] = mapped_column(Text)


class FamilyPoint(Base):
    __tablename__ = "family_points"
    family: Mapped[str] = mapped_column(ForeignKey("families.name", ondelete="CASCADE"), primary_key=True)
    point_id: Mapped[str] = mapped_column(ForeignKey("points.id", ondelete="CASCADE"), primary_key=True)
    __table_args__ = (Index("ix_family_points_point", "point_id"),)


# Attempt states in which a point is taken: its job is being submitted, queued or running.
ACTIVE_STATES = frozenset({"submitting", "pending", "running", "requeued"})
# Every status a point can have (points.status): a filter naming another matches nothing.
POINT_STATUSES = ("planned", *sorted(ACTIVE_STATES), "evaluating", "trained", "succeeded", "diverged",
                  "failed", "timeout", "out_of_memory", "node_fail", "lost", "cancelled", "void")  # fmt: skip


class Attempt(Base):
    """One try at running a point: a local process or a Slurm job (array task)."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    point_id: Mapped[str] = mapped_column(ForeignKey("points.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))  # job id, or "local:<start time>"
    launcher: Mapped[str] = mapped_column(String(20))
    job_id: Mapped[str | None] = mapped_column(String(100))
    array_index: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(30))
    node: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    exit_reason: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(Text)
    submission: Mapped[str | None] = mapped_column(String(100), index=True)  # Submission.token
    stage: Mapped[str] = mapped_column(String(10), default="train", server_default="train")  # or "eval"
    __table_args__ = (
        UniqueConstraint("point_id", "key", name="uq_attempts_point_key"),
        Index("ix_attempts_state", "state"),
    )


class Submission(Base):
    """One job array (or local batch) of a launch, recorded before it is submitted.

    ``state``: ``intent`` (written, maybe submitted: the launcher may have died around
    sbatch), ``submitted`` (job id known, tasks still held), ``released`` (free to run),
    ``void`` (never reached the scheduler).
    """

    __tablename__ = "submissions"
    token: Mapped[str] = mapped_column(String(100), primary_key=True)  # also the job name
    family: Mapped[str] = mapped_column(ForeignKey("families.name", ondelete="CASCADE"))
    launcher: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    job_id: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    folder: Mapped[str] = mapped_column(Text)
    resources: Mapped[str] = mapped_column(Text)  # JSON
    owner: Mapped[str] = mapped_column(String(200))  # "host pid start-time" of the launcher
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    stage: Mapped[str] = mapped_column(String(10), default="train", server_default="train")  # or "eval"
    after: Mapped[str | None] = mapped_column(String(100))  # an evaluation's training submission
    __table_args__ = (Index("ix_submissions_family_state", "family", "state"),)


class Metric(Base):
    """One number of one evaluation of a point; NULL with a reason when it was not finite."""

    __tablename__ = "metrics"
    point_id: Mapped[str] = mapped_column(ForeignKey("points.id", ondelete="CASCADE"), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200), primary_key=True)
    metric: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    # Rows are found by their key, so SQLite stores them in it (no separate rowid b-tree).
    __table_args__ = (
        Index("ix_metrics_dataset_metric_value", "dataset", "metric", "value"),
        {"sqlite_with_rowid": False},
    )


class Fit(Base):
    """One fitted law: what it was fitted on (family, selection filters, metric, frontier)
    and what came out, so `scaling fit --history` shows how the law moved as points landed."""

    __tablename__ = "fits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    family: Mapped[str] = mapped_column(ForeignKey("families.name", ondelete="CASCADE"))
    selection: Mapped[str] = mapped_column(Text)  # the filters, canonical JSON
    dataset: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(20))
    bins: Mapped[int] = mapped_column(Integer)
    fitted_at: Mapped[datetime]
    n_runs: Mapped[int] = mapped_column(Integer)
    n_frontier: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    alpha_low: Mapped[float | None] = mapped_column(Float)
    alpha_high: Mapped[float | None] = mapped_column(Float)
    beta: Mapped[float] = mapped_column(Float)
    beta_low: Mapped[float | None] = mapped_column(Float)
    beta_high: Mapped[float | None] = mapped_column(Float)
    level: Mapped[float] = mapped_column(Float)
    r2: Mapped[float] = mapped_column(Float)
    n_boot: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[str] = mapped_column(String(64))  # sha256 of the runs and values fitted
    trigger: Mapped[str] = mapped_column(String(20))  # "fit" (on demand) or "ingest"
    __table_args__ = (Index("ix_fits_key", "family", "dataset", "metric", "fitted_at"),)
