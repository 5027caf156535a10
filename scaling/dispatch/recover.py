"""Recovery of what killed launchers left: their intents adopted where the scheduler has
the job (found by its name, its token) or voided where it has none, and their held jobs
started, or cancelled if submitit's payload never reached them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

from scaling.clock import db_now
from scaling.dispatch.backends import Backend, backend_for, owner_gone
from scaling.plan import Plan
from scaling.store.attempts import SubmissionInfo, set_submission, submissions


def recover(plan: Plan, engine: Engine) -> tuple[int, int]:
    """Settle submissions left by launchers that are gone: adopt the ones the scheduler
    has (and start them), void the others. Returns (adopted, voided)."""
    family = plan.sweep.name
    now = db_now()
    pending = [
        s
        for s in submissions(engine, family, ["intent", "submitted"])
        if owner_gone(s.owner, (now - s.created_at).total_seconds())
    ]
    # A killed launcher's sbatch can land after the intent was voided: such a held array
    # is found by its name and cancelled before it can run.
    recent_void = [
        s for s in submissions(engine, family, ["void"]) if (now - s.created_at).total_seconds() < 3600
    ]
    adopted, voided = 0, 0
    for launcher, intents in _by_launcher([s for s in pending if s.state == "intent"] + recent_void).items():
        backend = backend_for(plan, launcher)
        found = backend.settle(intents)
        backend.discard([job for s in intents if s.state == "void" and (job := found.get(s.token))])
        for s in (s for s in intents if s.state == "intent"):
            job = found.get(s.token)
            if job is None:
                set_submission(engine, s.token, "void", reason="never submitted: its launcher stopped first")
                voided += 1
            else:
                set_submission(engine, s.token, "submitted", job, _task_ids(backend, job, s.size))
                adopted += 1
    to_start = submissions(engine, family, ["submitted"])
    to_start = [s for s in to_start if owner_gone(s.owner, (now - s.created_at).total_seconds())]
    for launcher, subs in _by_launcher(to_start).items():
        broken = backend_for(plan, launcher).start(subs)
        for s in subs:
            if s.token in broken:  # its launcher died before submitit put its pickles in place
                set_submission(
                    engine, s.token, "void", reason="cancelled: its launcher stopped mid-submission"
                )
            else:
                set_submission(engine, s.token, "released")
    return adopted, voided


def _by_launcher(subs: Sequence[SubmissionInfo]) -> dict[str, list[SubmissionInfo]]:
    out: dict[str, list[SubmissionInfo]] = {}
    for s in subs:
        out.setdefault(s.launcher, []).append(s)
    return out


def _task_ids(backend: Backend, job_id: str, size: int) -> Callable[[int], str]:
    return lambda index: backend.task_id(job_id, index, size)
