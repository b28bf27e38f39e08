"""kill -9 trials: the workflow (Snakemake and every job it started) is killed at random
moments spread over tensorisation, training and the final step, rerun as the README says
(`snakemake --unlock`, then the same command again), and must end with the same files as
an uninterrupted run: every metric, prediction, model and report file, byte for byte,
except the files that record time (README, "Files that record time"). One kill falls while
a fold trains and a `train.*` param changes before the rerun: that fold's resume state is
discarded (the log says so) and the results equal an uninterrupted run with the new param.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.workflow.conftest import make_project, run, shipped_params, tools_env, write_params

pytestmark = pytest.mark.workflow

DATASET = "digits"
COMMAND = ["snakemake", "--cores", "1"]
#: results that record time (latency measurements, and the report that shows them)
TIME_RECORDING = {f"results/{DATASET}/final/{name}" for name in ("latency.json", "report.html")}


def _params(dropout: float) -> dict:
    params = shipped_params()
    params["datasets"] = {DATASET: params["datasets"][DATASET]}
    # enough epochs that a kill lands inside training, a second or more after the first
    # backup: an epoch of these 40 rows takes 12-30 ms, and with 12 epochs a fold could end
    # before a kill 0.7 s after its first backup, leaving no resume state to discard (CI of
    # 71430d6 on an AVX-512 host); a backup after every epoch
    params["train"].update(epochs=100, patience=100, checkpoint_seconds=0, dropout=dropout)
    # a final training as long as a fold's: `auto` can be one or two epochs, over before
    # the kill lands, and a missed moment leaves the workflow finished (every later one too)
    params["final"]["epochs"] = 100
    return params


def _project(parent: Path, dropout: float) -> Path:
    parent.mkdir()
    project = make_project(parent)
    write_params(project, _params(dropout))
    return project


def _backed_up(project: Path, kind: str, since: float) -> bool:
    """Whether a `kind` job committed a backup since `since` (this run's start). A job
    that finishes removes its `.backup` folder, maybe while this looks: that is a no, and
    the caller's next look decides."""
    try:
        return any(path.stat().st_mtime > since
                   for path in project.glob(f"results/**/.backup/*{kind}*/train/backup.json"))
    except FileNotFoundError:
        return False


def _exists(name: str) -> Callable[[Path, float], bool]:
    return lambda project, since: (project / "results" / DATASET / name).exists()


def _files(project: Path) -> dict[str, bytes]:
    return {str(path.relative_to(project)): path.read_bytes()
            for path in sorted((project / "results").rglob("*")) if path.is_file()}


#: (what the moment is, when it has come, the longest random delay after it, in seconds)
MOMENTS: list[tuple[str, Callable[[Path, float], bool], float]] = [
    ("tensorisation", _exists("tensors/plan.parquet"), 1.5),
    ("baselines and first fold", _exists("tensors/index.parquet"), 3.0),
    ("fold training (then a train.* param changes)",
     lambda project, since: _backed_up(project, "nn-fold", since), 1.0),
    ("fold training, resumed", lambda project, since: _backed_up(project, "nn-fold", since), 1.0),
    ("final training", lambda project, since: _backed_up(project, "final", since), 1.0),
    ("test, latency and report", _exists("final/model.keras"), 4.0),
]


def _job_logs(project: Path) -> str:
    """The jobs' logs now (a rerun job rewrites its log)."""
    return "".join(path.read_text() for path in sorted((project / "logs").rglob("*.log")))


def _run_until(project: Path, ready: Callable[[Path, float], bool], delay: float,
               log: Path) -> bool:
    """Run the workflow; once `ready`, wait `delay` s and SIGKILL its whole process group.
    Returns whether it was killed (False: it finished first)."""
    with log.open("a") as out:
        job = subprocess.Popen(COMMAND, cwd=project, env=tools_env(), stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
        since = time.time()
        deadline = since + 900
        while job.poll() is None and not ready(project, since) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        if job.poll() is not None:
            return False
        os.killpg(job.pid, signal.SIGKILL)  # Snakemake and every job it started
        job.wait()
        return True


@pytest.mark.seconds(100)
def test_kill_9_at_random_moments_then_rerun_gives_the_uninterrupted_files(tmp_path):
    seed = int(os.environ.get("KILL_TRIAL_SEED") or time.time())
    rng = random.Random(seed)
    why = f"KILL_TRIAL_SEED={seed} reproduces these moments"
    # the reference runs meanwhile, uninterrupted, with the param the trial ends with
    reference = _project(tmp_path / "reference", dropout=0.2)
    uninterrupted = subprocess.Popen(COMMAND, cwd=reference, env=tools_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial = _project(tmp_path / "trial", dropout=0.35)
    log = trial / "trial.log"
    kills, logs = [], []
    try:
        for moment, ready, longest in MOMENTS:
            delay = rng.uniform(0, longest)
            if _run_until(trial, ready, delay, log):
                kills.append(f"{moment} +{delay:.2f} s")
            logs.append(_job_logs(trial))
            unlocked = run(["snakemake", "--unlock"], trial)
            assert unlocked.returncode == 0, unlocked.stderr[-2000:]
            if moment.endswith("(then a train.* param changes)"):
                write_params(trial, _params(dropout=0.2))
        done = run(COMMAND, trial, timeout=900)
        assert done.returncode == 0, (why, done.stderr[-3000:])
        logs.append(_job_logs(trial))
    finally:
        assert uninterrupted.wait(timeout=900) == 0
    assert len(kills) >= 5, (why, kills)
    assert any("discarded the resume state" in text for text in logs), (why, kills)
    assert any("resuming from the state" in text for text in logs), (why, kills)
    got, want = _files(trial), _files(reference)
    assert sorted(got) == sorted(want), (why, kills, set(got) ^ set(want))
    differing = [name for name in want if got[name] != want[name]]
    assert set(differing) <= TIME_RECORDING, (why, kills, differing)
    assert not list(trial.glob("results/**/.backup")), "a finished run leaves no resume state"
