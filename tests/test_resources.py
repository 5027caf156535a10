"""Per-point Slurm resources and their grouping into job arrays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MINI_SWEEP

from scaling.errors import ClipscaleError
from scaling.plan import plan
from scaling.resources import TIME_LADDER_MIN, job_arrays, resources, slurm_settings


def test_every_paper_point_gets_its_own_size() -> None:
    p = plan("paper")
    s = slurm_settings(p.sweep.cluster)
    arrays = job_arrays(p.points, s)
    ids = [i for a in arrays for i in a.point_ids]
    assert sorted(ids) == sorted(q.point.id for q in p.points)  # each point in exactly one array
    by_id = {q.point.id: q for q in p.points}
    for a in arrays:
        r = a.resources
        assert r.time_min in (*TIME_LADDER_MIN, s.time_limit_min) and r.time_min <= s.time_limit_min
        for i in a.point_ids:
            assert r.nodes * r.gpus_per_node == by_id[i].point.train.gpus
            assert r.tasks_per_node == r.gpus_per_node == 4 and r.mem_gb == 4 * s.mem_gb_per_gpu
    # Different world sizes are different classes: 10 GPU counts, more than one class.
    assert len({a.resources.nodes for a in arrays}) == len({q.point.train.gpus for q in p.points})


def test_time_limit_follows_the_estimate_and_the_cap() -> None:
    p = plan("paper", ["model=ViT-B-32", "data=LAION-80M", "samples_seen=3B", "include=[]"])
    point = p.points[0]
    s = slurm_settings(p.sweep.cluster)
    wall = point.gpu_hours * 60 / point.point.train.gpus * s.time_safety + s.time_overhead_min
    r = resources(point, s)
    assert r.time_min >= wall and r.time_min == min(t for t in TIME_LADDER_MIN if t >= wall)
    capped = plan("paper", ["model=ViT-B-32", "data=LAION-80M", "samples_seen=3B", "include=[]",
                            "cluster.time_limit_min=60"])  # fmt: skip
    assert resources(capped.points[0], slurm_settings(capped.sweep.cluster)).time_min == 60


def test_large_sweeps_are_cut_to_max_array_size(write_sweep: Callable[[str, str], Path]) -> None:
    seeds = ", ".join(str(i) for i in range(250))
    text = MINI_SWEEP.replace("cluster: local", "cluster: slurm").replace(
        "samples_seen: [4k, 16k]", "samples_seen: [4k]"
    )
    path = write_sweep("many", text + f"seed: [{seeds}]\n")
    p = plan(str(path), ["cluster.max_array_size=120", "cluster.gpus_per_node=1"])
    assert len(p.points) == 500
    arrays = job_arrays(p.points, slurm_settings(p.sweep.cluster))
    assert all(len(a.point_ids) <= 120 for a in arrays)
    assert sum(len(a.point_ids) for a in arrays) == 500
    assert len({a.resources for a in arrays}) == 1 and len(arrays) == 5  # one class, 500 / 120 -> 5 arrays


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+cluster.colour=red"], r"cluster: unknown key 'colour' \(valid: kind, partition"),
        (["cluster.gpus_per_node=-1"], r"cluster.gpus_per_node must be positive"),
        (["cluster.cpus_per_gpu=0"], r"cluster.cpus_per_gpu must be positive"),
        (["cluster.time_limit_min=soon"], r"cluster.time_limit_min must be a number"),
        (["cluster.gpus_per_node=3"], r"trains on \d+ GPUs, not a whole number of 3-GPU nodes"),
        (["cluster.additional_parameters=[a]"], r"Error merging override cluster.additional_parameters"),
    ],
)
def test_bad_cluster_settings_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ClipscaleError, match=message) as info:
        p = plan("paper", overrides)
        job_arrays(p.points, slurm_settings(p.sweep.cluster))
    assert "\n" not in str(info.value)


def test_local_cluster_has_no_slurm_resources() -> None:
    with pytest.raises(ClipscaleError, match="cluster kind 'local' has no Slurm resources"):
        slurm_settings(plan("toy").sweep.cluster)


def test_extra_sbatch_options_are_part_of_the_class() -> None:
    p = plan("paper", ["+cluster.additional_parameters={mail-type: FAIL}"])
    r = resources(p.points[0], slurm_settings(p.sweep.cluster))
    assert r.additional_parameters == (("mail-type", "FAIL"),)


def test_cpu_only_nodes_ask_for_no_gpus_and_one_task_per_rank(write_sweep) -> None:  # type: ignore[no-untyped-def]
    p = plan("toy", ["cluster=slurm", "model=[toy-s]", "data=[toy-4k]", "samples_seen=[4k]", "train.gpus=2"])
    s = slurm_settings(p.sweep.cluster)
    assert s.gpus_per_node == 0 and s.signal_delay_s == 30  # the toy sweep's clusters.slurm settings
    r = resources(p.points[0], s)
    assert (r.nodes, r.gpus_per_node, r.tasks_per_node, r.cpus_per_task) == (1, 0, 2, 1)


def test_an_epoch_must_fit_well_inside_the_time_limit() -> None:
    from scaling.dispatch.backends import SlurmBackend

    p = plan("paper", ["cluster=slurm", "cluster.time_limit_min=60"])
    with pytest.raises(ClipscaleError, match=r"one epoch takes about \d+ min, more than half its 60-min"):
        SlurmBackend(p).validate(p.points)
