"""The resume state of fold jobs that start and finish side by side: results/<ds>/.backup/ is
shared by every training job of a dataset, and one job's end must never fail another's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dlworkflow.train import claim_backup, release_backup


def test_release_keeps_the_shared_folder_while_another_job_has_state_there(tmp_path: Path):
    shared = tmp_path / "results" / "ds" / ".backup"
    first, second = shared / "nn-fold-1", shared / "nn-fold-2"
    assert claim_backup(first, "key-1", "fold 1") is False
    assert claim_backup(second, "key-2", "fold 2") is False
    (first / "train").mkdir()
    (first / "train" / "backup.json").write_text("{}")

    release_backup(first)
    assert not first.exists()
    assert (second / "key.txt").read_text() == "key-2\n", "the other job's state is kept"

    release_backup(second)
    assert not shared.exists(), "the last job to finish leaves no .backup folder"


def test_release_after_the_other_job_removed_the_shared_folder(tmp_path: Path):
    """What failed a SUBJ fold in the suite run of 11289af: two folds finished together,
    both saw the folder empty, and the second to remove it found it gone."""
    shared = tmp_path / ".backup"
    first, second = shared / "nn-fold-3", shared / "nn-fold-4"
    claim_backup(first, "a", "fold 3")
    claim_backup(second, "b", "fold 4")
    release_backup(first)
    release_backup(second)
    assert not shared.exists()
    release_backup(second)  # its folder and the shared one both gone: nothing to do, no error
    assert not shared.exists()


def test_a_claim_recreates_the_shared_folder_and_resumes_only_its_own_key(tmp_path: Path):
    backup = tmp_path / ".backup" / "nn-fold-0"
    assert claim_backup(backup, "params-1", "fold 0") is False
    assert claim_backup(backup, "params-1", "fold 0") is True, "same key: resumes"
    assert claim_backup(backup, "params-2", "fold 0") is False, "other params: starts over"
    release_backup(backup)
    assert not backup.parent.exists()
    assert claim_backup(backup, "params-2", "fold 0") is False
    assert (backup / "key.txt").read_text() == "params-2\n"


def test_jobs_claiming_and_releasing_side_by_side_never_fail(tmp_path: Path):
    """Four jobs of one dataset, each claiming and releasing its own state 150 times while the
    others do the same: every claim leaves its folder in place, and no step raises."""
    shared = tmp_path / ".backup"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def job(fold: int) -> None:
        backup = shared / f"nn-fold-{fold}"
        start.wait()
        try:
            for round_ in range(150):
                claim_backup(backup, f"key-{round_}", f"fold {fold}")
                assert (backup / "key.txt").is_file()
                release_backup(backup)
        except BaseException as error:  # a thread's failure, reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=job, args=(fold,)) for fold in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert not shared.exists()


def test_a_job_killed_while_its_state_is_removed_leaves_none_to_resume_from(tmp_path: Path,
                                                                            monkeypatch):
    """What failed the kill trial of 50b235d's CI-like run: the final model's job was killed
    while `shutil.rmtree` removed its finished state, after the history and before the
    weights backup, and the rerun resumed from the weights with no history (its history.csv
    held the last epoch alone). Removal is whole or nothing: a rerun finds no state and
    trains from the start, and what the killed removal left is swept."""
    import shutil

    import dlworkflow.train

    backup = tmp_path / "results" / "ds" / ".backup" / "ds-final"
    assert claim_backup(backup, "params-1", "final model") is False
    (backup / "train").mkdir()  # a state as the training writes it
    (backup / "train" / "backup.json").write_text(
        '{"epoch": 99, "weights": "weights-99.weights.h5", "state": "state-99.npz"}')
    (backup / "train" / "weights-99.weights.h5").write_bytes(b"weights")
    (backup / "train-state").mkdir()
    (backup / "train-state" / "history.csv").write_text("accuracy,epoch\n0.5,0\n")

    rmtree = shutil.rmtree

    def killed_midway(path, ignore_errors=False):  # removes the history, then the job dies
        rmtree(Path(path) / "train-state")
        raise KeyboardInterrupt("SIGKILL")

    monkeypatch.setattr(dlworkflow.train.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        release_backup(backup)
    monkeypatch.undo()
    assert not backup.exists(), "no half state under the job's own name"
    assert claim_backup(backup, "params-1", "final model") is False, "nothing to resume"
    assert sorted(p.name for p in backup.parent.iterdir()) == ["ds-final"], "leftovers swept"
    release_backup(backup)
    assert not backup.parent.exists()
