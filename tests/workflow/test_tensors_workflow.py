"""Step 3 end to end: one job per shard, trainval shards only, resume, loader on real shards."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dlworkflow.data import Part, load_arrays, make_dataset
from dlworkflow.tasks import get_task
from dlworkflow.tensors import load_shard
from dlworkflow.workflow import STEPS
from tests.workflow.conftest import run

pytestmark = pytest.mark.workflow


def test_trainval_shards_cover_trainval_and_no_test_shard_is_built(demo_project):
    for name in ("digits", "fsdd", "sms_spam"):
        tensors = demo_project / "results" / name / "tensors"
        plan = pd.read_parquet(tensors / "plan.parquet")
        index = pd.read_parquet(tensors / "index.parquet")
        splits = pd.read_parquet(demo_project / "results" / name / "split" / "splits.parquet")
        assert sorted(index["id"]) == sorted(splits.loc[splits["role"] == "trainval", "id"])
        assert (index["role"] == "trainval").all()
        assert not list(tensors.glob("test-*.npz")), "test shards belong to the final step"
        assert (plan["role"] == "test").any()
    digits = load_shard(demo_project / "results" / "digits" / "tensors" / "trainval-00000.npz")
    # digits override the image size and colour (datasets.digits.tensors in params.yaml)
    assert digits["x"].shape[1:] == (16, 16, 1) and digits["x"].dtype == np.uint8
    fsdd = load_shard(demo_project / "results" / "fsdd" / "tensors" / "trainval-00000.npz")
    assert fsdd["x"].shape[1:] == (64, 1 + (16000 - 512) // 160, 1)  # shipped audio settings
    stats = json.loads((demo_project / "results" / "sms_spam" / "tensors" / "stats.json")
                       .read_text())
    assert stats["suggested_sequence_length"] > 5 and stats["vocabulary_size"] > 50
    co2 = load_shard(demo_project / "results" / "co2" / "tensors" / "trainval-00000.npz")
    assert co2["x"].shape[1:] == (104, 1) and co2["y"].shape[1:] == (52,)


#: the only rules that may have test-role tensors among their inputs or outputs
FINAL_READERS = {"final_test", "final_report"}


def _jobs(dry_run: str) -> list[tuple[str, str, str]]:
    """(rule, input line, output line) of every job in `snakemake -n` output."""
    jobs, rule, fields = [], None, {}
    for line in [*dry_run.splitlines(), "rule end:"]:
        stripped = line.strip()
        if line.startswith(("rule ", "checkpoint ", "localrule ")) and stripped.endswith(":"):
            if rule:
                jobs.append((rule, fields.get("input", ""), fields.get("output", "")))
            rule, fields = stripped.split()[-1].rstrip(":"), {}
        elif rule and stripped.startswith(("input:", "output:")):
            key, _, value = stripped.partition(":")
            fields[key] = value
    return jobs


def test_only_final_rules_read_test_shards(demo_project):
    """Walk the whole DAG: test-role tensors are written by one rule and read only by the
    scoring and report rules; the final model's training reads none."""
    # every job after the shard plan (a checkpoint: its output must exist for Snakemake to
    # know the shards), so all jobs that could touch a shard are in the dry run
    after_plan = [rule for step in STEPS if step.name in ("tensors", "features", "baseline",
                                                          "train", "final")
                  for rule in step.rules if rule != "tensor_plan"]
    dry = run(["snakemake", "--cores", "2", "-n", "--forcerun", *after_plan], demo_project)
    assert dry.returncode == 0, dry.stderr[-2000:]
    jobs = _jobs(dry.stdout)
    rules = {rule for rule, _, _ in jobs}
    assert {"final_train", "final_test", "tensorize_test_shard", "train_fold"} <= rules
    readers = {rule for rule, inputs, _ in jobs if "/test-" in inputs}
    writers = {rule for rule, _, outputs in jobs if "/test-" in outputs}
    assert readers == FINAL_READERS and writers == {"tensorize_test_shard"}
    assert all("/final/" in outputs for rule, _, outputs in jobs if rule == "tensorize_test_shard")


def test_a_deleted_shard_is_the_only_one_recomputed(demo_project):
    """What a killed run leaves: some shards written, one missing, no index yet."""
    tensors = demo_project / "results" / "fsdd" / "tensors"
    victim = tensors / "trainval-00000.npz"
    before, before_bytes = load_shard(victim), victim.read_bytes()
    others = {p.name: p.stat().st_mtime_ns for p in tensors.glob("trainval-*.npz") if p != victim}
    victim.unlink()
    (tensors / "index.parquet").unlink()
    done = run(["snakemake", "--cores", "2", "results/fsdd/tensors/index.parquet"], demo_project)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = " ".join((done.stdout + done.stderr).split())
    assert "tensorize_shard 1" in stats and "tensors_index 1" in stats
    assert "intake " not in stats and "split 1" not in stats
    after = load_shard(victim)
    assert np.array_equal(before["ids"], after["ids"]) and np.array_equal(before["x"], after["x"])
    assert victim.read_bytes() == before_bytes  # byte for byte: DVC sees the same file
    assert others == {p.name: p.stat().st_mtime_ns for p in tensors.glob("trainval-*.npz")
                      if p != victim}


def test_loader_streams_the_same_items_as_ram_and_folds_are_disjoint(demo_project):
    tensors = demo_project / "results" / "digits" / "tensors"
    task = get_task("classification")
    train = load_arrays(Part(task, tensors, 0, "train"))
    valid = load_arrays(Part(task, tensors, 0, "valid"))
    assert set(train["ids"]).isdisjoint(valid["ids"])
    everything = load_arrays(Part(task, tensors, None, "trainval"))
    assert len(train["ids"]) + len(valid["ids"]) == len(everything["ids"])
    assert train["classes"] == tuple(str(d) for d in range(10))
    streamed = make_dataset(Part(task, tensors, 0, "train"), batch_size=16, shuffle=False,
                            in_memory=False)
    in_ram = make_dataset(Part(task, tensors, 0, "train"), batch_size=16, shuffle=False,
                          in_memory=True)
    count = lambda dataset: sum(int(x.shape[0]) for x, _ in dataset)  # noqa: E731
    assert count(streamed) == count(in_ram) == len(train["ids"]) > 0
    x, y = next(iter(in_ram))
    assert tuple(x.shape[1:]) == (16, 16, 1) and str(y.dtype) == "<dtype: 'int64'>"
