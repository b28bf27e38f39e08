"""Steps 2 and 5 in the workflow: per-fold jobs, CV summaries, out-of-fold predictions."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import QUICK_FOLDS, README, run

pytestmark = pytest.mark.workflow
DATASETS = ("digits", "fsdd", "sms_spam", "co2")


@pytest.mark.parametrize("name", DATASETS)
def test_baseline_and_network_summaries_cover_every_fold(demo_project, name):
    results = demo_project / "results" / name
    choice = json.loads((results / "intake" / "metric.json").read_text())
    primary = choice["primary"]["name"]
    index = pd.read_parquet(results / "tensors" / "index.parquet")
    validated = index["fold"].notna().sum()  # forecasting: windows outside folds only train
    for kind in ("baseline", "nn"):
        summary = json.loads((results / kind / "summary.json").read_text())
        assert summary["primary"] == primary and summary["folds"] == QUICK_FOLDS
        for metrics in summary["models"].values():
            assert len(metrics[primary]["folds"]) == QUICK_FOLDS
            assert metrics[primary]["std"] >= 0
        oof = pd.read_parquet(results / kind / "oof.parquet")
        for _, rows in oof.groupby("model"):
            ids = rows["id"].unique()
            assert len(ids) == validated and set(ids) <= set(index["id"])  # each row once
            assert (rows.groupby("id")["fold"].nunique() == 1).all()
    network = json.loads((results / "nn" / "summary.json").read_text())
    assert network["baseline"]["model"] in json.loads(
        (results / "baseline" / "summary.json").read_text())["models"]
    # the verdict says plainly whether the network beat the baseline (tiny data: often not)
    said = "beats" if network["beats_baseline"] else "does not beat"
    assert said in network["verdict"] and len(network["best_epochs"]) == QUICK_FOLDS
    model_dir = results / "nn" / "fold-0"
    card = json.loads((model_dir / "model.json").read_text())
    assert card["task"] == choice["task"] and card["fold"] == 0
    history = pd.read_csv(model_dir / "history.csv")  # what dvc plots draws
    assert {"epoch", "loss", "val_loss"} <= set(history.columns)


def _training_jobs(dry: str) -> list[str]:
    """The dry-run blocks of the train_fold jobs."""
    return [block for block in dry.split("\n\n") if "rule train_fold:" in block]


def test_training_jobs_take_a_gpu_slot_only_with_a_gpu_and_read_no_test_shard(demo_project):
    command = ["snakemake", "--cores", "2", "--forcerun", "train_fold", "-n", "-p",
               "results/digits/nn/summary.json"]
    with_gpu = run(command, demo_project, env={"DLWORKFLOW_GPUS": "1"})
    assert with_gpu.returncode == 0, with_gpu.stderr[-2000:]
    jobs = _training_jobs(with_gpu.stdout)
    folds = len(jobs)  # one per fold of the project's params
    assert folds >= 2 and all("gpu=1" in job and "threads: 2" in job for job in jobs)
    assert "/test-" not in with_gpu.stdout
    # no GPU: one thread (a dry run shows threads above 1 only) and no slot, so
    # `--resources gpu=1` does not queue the folds
    on_cpu = run(command, demo_project, env={"DLWORKFLOW_GPUS": "0"})
    jobs = _training_jobs(on_cpu.stdout)
    assert len(jobs) == folds and all("gpu=0" in job and "threads:" not in job
                                      for job in jobs), jobs[0]


def test_the_network_is_chosen_again_only_for_images_and_texts_as_the_readme_says(
        demo_project):
    """The README's way to choose `auto`'s network again (weights installed since): forcing
    rule choose_network, which exists for the image and text sets only, reruns their folds
    and final models and nothing of the audio and forecasting sets (choose_extractor, forced
    with it, has no job here: no demo set is embedded)."""
    command = re.search(r"`(snakemake [^`]*--forcerun choose_network[^`]*)`", README)
    assert command, "the README no longer says how to choose the network again"
    dry = run([*command.group(1).split(), "-n"], demo_project)
    assert dry.returncode == 0, dry.stderr[-2000:]
    jobs = _dry_jobs(dry.stdout)
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], set()).add(job["dataset"])
    assert by_rule["choose_network"] == {"digits", "sms_spam"}
    assert by_rule["train_fold"] == by_rule["final_train"] == {"digits", "sms_spam"}
    assert by_rule["encode_texts"] == {"sms_spam"}
    assert not {job["dataset"] for job in jobs} & {"fsdd", "co2"}
    assert "choose_extractor" in command.group(1) and "choose_extractor" not in by_rule


def test_predict_cli_reads_raw_files_with_a_fold_model(demo_project, tmp_path):
    """Three real recordings are predicted; a file that is no WAV among them keeps its row
    with the reason, as intake would word it, and the command says so and exits 1."""
    raw = sorted((demo_project / "data" / "raw" / "fsdd" / "recordings").glob("*.wav"))[:3]
    model_dir = demo_project / "results" / "fsdd" / "nn" / "fold-0"
    done = run(["dlworkflow", "predict", str(model_dir), *map(str, raw)], demo_project)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("input,prediction,p_0") and len(lines) == 4
    broken = tmp_path / "broken.wav"
    broken.write_bytes(raw[0].read_bytes()[:20])  # a WAV header cut short
    again = run(["dlworkflow", "predict", str(model_dir), str(raw[0]), str(broken), str(raw[1])],
                demo_project)
    assert again.returncode == 1, again.stderr[-2000:]
    table = pd.read_csv(io.StringIO(again.stdout))
    assert table["input"].tolist() == [str(raw[0]), str(broken), str(raw[1])]
    assert table.columns[-1] == "error" and table["error"].isna().tolist() == [True, False, True]
    assert table.iloc[1, 1:-1].isna().all() and "cannot decode it" in table["error"][1]
    first = pd.read_csv(io.StringIO(done.stdout))
    pd.testing.assert_frame_equal(table.drop(columns="error").iloc[[0, 2]].reset_index(drop=True),
                                  first.iloc[:2], check_dtype=False)  # the others as alone
    assert "1 of 3 inputs could not be predicted" in again.stderr
    assert f"{broken}: cannot decode it" in again.stderr and "Traceback" not in again.stderr


def _dry_jobs(dry: str) -> list[dict]:
    """Rule, dataset, priority and threads of every job block of a dry run (a dry run prints a
    priority other than 0 and threads above 1 only)."""
    jobs = []
    for block in dry.split("\n\n"):
        rule = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):", block, re.M)
        if rule:
            dataset = re.search(r"dataset=(\w+)", block)
            priority = re.search(r"^\s+priority: ([\d.]+)", block, re.M)
            threads = re.search(r"^\s+threads: (\d+)", block, re.M)
            jobs.append({"rule": rule.group(1), "dataset": dataset and dataset.group(1),
                         "priority": float(priority.group(1)) if priority else 0.0,
                         "threads": int(threads.group(1)) if threads else 1})
    return jobs


def test_data_steps_start_first_then_final_steps_then_folds_in_params_order(demo_project):
    """Without priorities, on 2 cores, the other datasets' intake waited behind every fold
    of the datasets first ready, and one core idled through their data steps; intake asked
    for every core and so never fitted beside a running fold."""
    # forcing every job hides the jobs after the checkpoint (tensor_plan decides the
    # shards); forcing the shards shows them and all that follows
    dry = ["snakemake", "-n", "--cores", "2"]
    every, after = (_dry_jobs(run([*dry, *force], demo_project).stdout) for force in (
        ["--forceall"], ["--forcerun", "tensorize_shard", "tensorize_test_shard"]))
    jobs = every + after
    prepare = {"demo_data", "intake", "choose_metric", "split", "tensor_plan",
               "tensorize_shard", "tensors_index", "choose_network", "encode_texts"}
    final = {"baseline_summary", "nn_summary", "final_train", "final_baseline",
             "tensorize_test_shard", "final_test", "final_latency", "final_report"}
    folds = {"train_fold", "baseline_fold"}
    assert prepare | final | folds | {"eda", "all"} == {job["rule"] for job in jobs}
    priority = {kind: [job["priority"] for job in jobs if job["rule"] in rules]
                for kind, rules in (("prepare", prepare), ("final", final), ("folds", folds),
                                    ("eda", {"eda"}))}
    assert min(priority["prepare"]) > max(priority["final"])
    assert min(priority["final"]) > max(priority["folds"])
    assert min(priority["folds"]) > max(priority["eda"])
    # folds go in the order params.yaml lists the datasets
    listed = list(yaml.safe_load((demo_project / "params.yaml").read_text())["datasets"])
    by_dataset = {name: {job["priority"] for job in jobs
                         if job["rule"] in folds and job["dataset"] == name} for name in listed}
    assert all(len(values) == 1 for values in by_dataset.values()), by_dataset
    ranks = [by_dataset[name].pop() for name in listed]
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == len(listed)
    # intake takes at most half the cores: one process on 2 cores, four on 8
    on_eight = _dry_jobs(run(["snakemake", "-n", "--forcerun", "intake", "--cores", "8"],
                             demo_project).stdout)
    for found, threads in ((every, 1), (on_eight, 4)):
        intakes = [job for job in found if job["rule"] == "intake"]
        assert len(intakes) == len(listed) and {job["threads"] for job in intakes} == {threads}


def test_training_logs_carry_no_library_warnings(demo_project):
    """A job's log is what a user reads when a score looks wrong: every training job's log
    has its epochs' progress lines and, for networks with BatchNormalization, the
    recalibration line, and no warning from TensorFlow or Keras. Keras warned in every log
    that `fit`'s default `shuffle=True` is ignored for a dataset, and TensorFlow that the
    recalibration's per-layer function retraced ("tracing is expensive"), though nothing
    was wrong."""
    folds = yaml.safe_load((demo_project / "params.yaml").read_text())["split"]["folds"]
    logs = {path: path.read_text() for name in DATASETS
            for pattern in ("train_fold-*.log", "final_train.log")
            for path in (demo_project / "logs" / name).glob(pattern)}
    assert len(logs) == len(DATASETS) * (folds + 1), sorted(logs)
    # an epoch's progress line ("1/1 - 1s - ... loss: ..."); Keras heads it "Epoch 1/n"
    # only when a fit has more than one epoch, as a final model of one epoch has not
    assert all(re.search(r"^\d+/\d+ - .*\bloss: ", text, re.M) for text in logs.values())
    fsdd = [text for path, text in logs.items() if path.parent.name == "fsdd"]
    assert all(re.search(r"BatchNormalization statistics of \d+ layers", text) for text in fsdd)
    # and no warning of TensorFlow's C++ core ("W0000 ..." lines) in any job's log: the
    # sentence encoder's graph once gave the optimiser's cost model an attention softmax of
    # unknown rank, a dozen lines in every job that ran it
    logs.update({path: path.read_text() for path in (demo_project / "logs").glob("*/*.log")})
    for path, text in logs.items():
        noise = [line for line in text.splitlines()
                 if re.search(r"\w+Warning: |WARNING (tensorflow|absl|keras)|^W\d{4} ", line)]
        assert not noise, (path, noise[:3])


def test_the_runtime_breakdown_reconciles_with_the_runs_own_records(demo_project):
    """`bench/runtime.py` on the quick look: one job a benchmark file, the seconds at each
    number of jobs at once adding up to the run's span, a row for every training job, and
    the stretches with one job alone naming jobs of the run."""
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "bench" / "runtime.py"), "--project",
                           str(demo_project)], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    files = sorted((demo_project / "benchmarks").glob("*/*.tsv"))
    count, span = re.match(r"(\d+) jobs, \d+ job-seconds, first start to last end (\d+) s",
                           lines[0]).groups()
    assert int(count) == len(files)
    at_once = next(line for line in lines if line.startswith("jobs running at once"))
    seconds = [float(part.split(": ")[1]) for part in at_once.split("(s): ")[1].split(", ")]
    assert abs(sum(seconds) - int(span)) <= len(seconds)  # each figure rounded to 1 s
    names = {(path.parent.name, path.stem) for path in files}
    trained = {name for name in names if name[1].split("-")[0] in ("train_fold", "final_train")}
    assert len(trained) == len(DATASETS) * (QUICK_FOLDS + 1)
    for dataset, job in trained:
        assert f"| {dataset} | {job} |" in done.stdout
    lone = next((line for line in lines if line.startswith("one job alone")), "")
    for dataset, job in re.findall(r"\d+-\d+ s (\w+) ([\w-]+)", lone):
        assert (dataset, job) in names


def test_the_blend_estimate_reconciles_with_the_runs_own_scores(demo_project):
    """`bench/blend.py` on the quick look: the network alone (w = 1) and the best baseline
    alone (w = 0) give the CV summaries' figures, and on a multiclass test (decided by the
    most probable class, as the blend is) the final step's test scores; forecasting is
    named as skipped."""
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "bench" / "blend.py"), "--project",
                           str(demo_project), "--weights", "0", "0.5", "1", "--json"],
                          capture_output=True, text=True, check=True)
    found = {entry["dataset"]: entry for entry in json.loads(done.stdout)}
    assert set(found) == set(DATASETS) and "skipped" in found["co2"]
    for name in ("digits", "fsdd", "sms_spam"):
        results, entry = demo_project / "results" / name, found[name]
        primary = entry["primary"]
        rows = {row["weight"]: row for row in entry["rows"]}
        network = json.loads((results / "nn" / "summary.json").read_text())
        baseline = json.loads((results / "baseline" / "summary.json").read_text())
        assert entry["baseline"] == baseline["best"]
        for weight, summary, model in ((1.0, network, entry["network"]),
                                       (0.0, baseline, baseline["best"])):
            cv = summary["models"][model][primary]
            assert rows[weight]["cv_mean"] == pytest.approx(cv["mean"], abs=1e-9), (name, weight)
            assert rows[weight]["cv_std"] == pytest.approx(cv["std"], abs=1e-9), (name, weight)
        test = json.loads((results / "final" / "test_metrics.json").read_text())
        if json.loads((results / "intake" / "metric.json").read_text())["classes"] > 2:
            for weight, kind in ((1.0, "network"), (0.0, "baseline")):
                assert rows[weight]["test"] == pytest.approx(
                    test[kind]["metrics"][primary]["value"], abs=1e-9), (name, kind)


def test_the_ship_margin_estimate_reconciles_with_the_runs_own_choice(demo_project):
    """`bench/ship_margin.py` on the quick look: each dataset's CV difference is the two CV
    summaries' means apart and its test difference the final step's two test scores apart
    (signed: positive where the network is better), margin 0 is the rule the final step
    applied (no choice changes), a margin no run's t reaches ships the baseline everywhere
    (the sum is 0) and one every t passes ships the network everywhere."""
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "bench" / "ship_margin.py"), "--projects",
                           str(demo_project), "--margins", "0", "inf", "--margins=-inf",
                           "--json"],
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    runs = {entry["dataset"]: entry for entry in found["runs"]}
    assert set(runs) | {entry["dataset"] for entry in found["skipped"]} == set(DATASETS)
    assert runs, found
    for name, entry in runs.items():
        results = demo_project / "results" / name
        network = json.loads((results / "nn" / "summary.json").read_text())
        test = json.loads((results / "final" / "test_metrics.json").read_text())
        primary, sign = network["primary"], 1 if network["greater_is_better"] else -1
        cv = network["models"][network["best"]][primary]["mean"] - network["baseline"][primary]["mean"]
        assert entry["cv_diff"] == pytest.approx(sign * cv, abs=1e-12), name
        scored = test["network"]["metrics"][primary]["value"] - \
            test["baseline"]["metrics"][primary]["value"]
        assert entry["test_diff"] == pytest.approx(sign * scored, abs=1e-12), name
        assert entry["shipped"] == json.loads((results / "final" / "shipped.json").read_text())[
            "shipped"]
        if entry["cv_diff"] != 0:
            assert (entry["shipped"] == "network") == (entry["cv_diff"] > 0), name
    today, never, always = found["margins"]
    assert today["changed"] == [] and never["shipped_minus_baseline"] == 0
    assert today["shipped_minus_baseline"] == pytest.approx(
        sum(e["test_diff"] for e in runs.values() if e["shipped"] == "network"), abs=1e-12)
    assert always["shipped_minus_baseline"] == pytest.approx(
        sum(e["test_diff"] for e in runs.values()), abs=1e-12)
    assert {(c["dataset"], c["gain"]) for c in always["changed"]} == {
        (name, e["test_diff"]) for name, e in runs.items() if e["shipped"] == "baseline"}
    # the binary set (SMS; balanced in the quick look, so accuracy): each model scored at the
    # threshold it ships with, the out-of-fold score at it the one its card reports, one fold
    # score a fold for each rule
    tuned = {name: e for name, e in runs.items() if "thresholds" in e}
    assert set(tuned) == {"sms_spam"}, set(tuned)
    thresholds, primary = tuned["sms_spam"]["thresholds"], tuned["sms_spam"]["primary"]
    final = demo_project / "results" / "sms_spam" / "final"
    for kind, card in (("network", "model.json"), ("baseline", "baseline.json")):
        shipped = json.loads((final / card).read_text())["threshold"]
        assert thresholds["thresholds"][kind] == shipped["threshold"], kind
        assert thresholds["pooled"][kind] == pytest.approx(
            shipped[f"oof_{primary}_at_threshold"], abs=1e-12), kind
        folds = len(json.loads((final.parent / "nn" / "summary.json").read_text())["best_epochs"])
        assert len(thresholds["shipped"][kind]) == len(thresholds["cross_validated"][kind]) == folds
    assert [row["rule"] for row in found["threshold_rules"]] == [
        "at_0.5", "shipped", "cross_validated"]
    assert found["threshold_rules"][0]["changed"] == []
    assert found["threshold_rules"][0]["shipped_minus_baseline"] == today["shipped_minus_baseline"]
