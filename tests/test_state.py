"""A point's state from its attempts: the one decision behind status, launch and summaries."""

from __future__ import annotations

import pytest

from scaling.store.state import Try, decide

T, E = "train", "eval"


@pytest.mark.parametrize(
    ("tries", "trained", "result", "status", "active", "done", "next_stage", "count"),
    [
        ([], False, None, "planned", False, False, T, 0),
        ([], False, "succeeded", "succeeded", False, True, T, 0),  # run by hand, not yet ingested
        ([Try(T, "pending"), Try(E, "pending")], False, None, "pending", True, False, T, 1),
        ([Try(T, "running"), Try(E, "pending")], False, None, "running", True, False, T, 1),
        ([Try(T, "trained"), Try(E, "running")], True, None, "evaluating", True, False, E, 1),
        ([Try(T, "trained"), Try(E, "succeeded")], True, "succeeded", "succeeded", False, True, E, 1),
        ([Try(T, "diverged")], False, "diverged", "diverged", False, True, T, 1),
        ([Try(T, "diverged"), Try(E, "cancelled")], False, "diverged", "diverged", False, True, T, 1),
        # A failed evaluation is tried again alone: the training stands.
        ([Try(T, "trained"), Try(E, "failed", "eval: x")], True, "failed", "failed", False, False, E, 1),
        ([Try(T, "failed", "rank 1: killed")], False, "failed", "failed", False, False, T, 1),
        ([Try(T, "failed"), Try(T, "timeout")], False, None, "timeout", False, False, T, 2),
        ([Try(T, "trained")], True, None, "trained", False, False, E, 0),
        # An old result on disk does not end a point that is being run again.
        ([Try(T, "failed"), Try(T, "running")], False, "failed", "running", True, False, T, 2),
    ],
)  # fmt: skip
def test_decide(tries: list[Try], trained: bool, result: str | None, status: str, active: bool, done: bool,
                next_stage: str, count: int) -> None:  # fmt: skip
    st = decide(tries, trained, result)
    assert (st.status, st.active, st.done, st.next_stage, st.tries) == (
        status,
        active,
        done,
        next_stage,
        count,
    )


def test_the_reason_of_a_failure_is_the_last_attempts() -> None:
    st = decide([Try(T, "failed", "old"), Try(T, "failed", "rank 1 (pid 7) died")])
    assert st.reason == "rank 1 (pid 7) died"
