"""The code base's shape: no import cycles, no forbidden directions, no private imports,
short argument lists, task and modality knowledge in their plugins, and DVC stage deps that
cover every module a step runs."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlworkflow.imports import cycles, import_graph
from dlworkflow.modalities import MODALITIES
from dlworkflow.tasks import TASKS
from dlworkflow.workflow import STEPS
from tests.conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "dlworkflow"
#: modules that run a step (or its scripts' helpers); plugins and helpers never import them
STEP_MODULES = {"intake", "choice", "splits", "eda", "tensors", "data", "baselines", "train",
                "evaluate", "final", "predict", "latency", "report", "explain", "context",
                "demo", "cli", "dvcgen", "workflow", "config", "shipping"}
#: helpers every layer may use; they import no step module and no plugin
LEAF_HELPERS = {"errors", "items", "figures", "layouts", "logs", "layers", "metrics",
                "estimators", "shardfile", "imports", "tfdata"}


def _name(module: str) -> str:
    return module.removeprefix("dlworkflow.")


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph(SRC)) == []


def test_the_import_graph_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "dlworkflow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from dlworkflow.b import g\n    return g\n")
    (package / "b.py").write_text("from dlworkflow import a\n")
    assert cycles(import_graph(tmp_path)) == [["dlworkflow.a", "dlworkflow.b"]]


def test_plugins_and_helpers_import_no_step_module():
    graph = import_graph(SRC)
    wrong = []
    for module, edges in graph.items():
        name = _name(module)
        top = name.split(".")[0]
        if top in ("modalities", "models", "tasks") or name in LEAF_HELPERS:
            wrong += [f"{name} -> {_name(e)}" for e in edges if _name(e) in STEP_MODULES]
        if name in LEAF_HELPERS:  # helpers do not reach up into the plugins either
            wrong += [f"{name} -> {_name(e)}" for e in edges
                      if _name(e).split(".")[0] in ("modalities", "models", "tasks")]
    assert wrong == []


def _python_files() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py")])


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlworkflow"):
                found += [f"{path.relative_to(REPO)}: {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert found == []


def test_no_function_takes_more_than_eight_parameters():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                count = len([n for n in names if n not in ("self", "cls")])
                if count > 8:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({count})")
    assert long == []


def _comparisons(names: set[str], skip: str, files: list[Path] | None = None) -> list[str]:
    """Comparisons (==, !=, in) of something with one of `names` as a string constant, in
    Python files (the package's and the scripts', or `files`) and templates outside the
    folder `skip`."""
    found = []
    for path in files if files is not None else _python_files():
        if skip in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            parts = [node.left, *node.comparators]
            constants = [p.value for p in parts if isinstance(p, ast.Constant)]
            for part in parts:
                if isinstance(part, ast.Tuple | ast.List | ast.Set):
                    constants += [e.value for e in part.elts if isinstance(e, ast.Constant)]
            if names & {c for c in constants if isinstance(c, str)}:
                found.append(f"{path.name}:{node.lineno}")
    pattern = re.compile(r"(==|!=)\s*'(" + "|".join(names) + ")'")
    for path in (PACKAGE / "templates").glob("*.j2"):
        found += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in pattern.finditer(path.read_text())]
    return found


def test_task_names_are_compared_only_inside_tasks():
    found = _comparisons(set(TASKS), "tasks")
    assert len(found) <= 5, found


def test_modality_names_are_compared_only_inside_modalities():
    found = _comparisons(set(MODALITIES), "modalities")
    assert len(found) <= 2, found


def test_the_counters_see_a_comparison_when_there_is_one(tmp_path):
    """The counts above are not vacuous: a planted comparison in a script is found."""
    planted = tmp_path / "zz_planted.py"
    planted.write_text('task = "x"\nif task == "forecasting" or task in ("audio", "text"):\n'
                       '    pass\n')
    assert any("zz_planted" in f for f in _comparisons(set(TASKS), "tasks", [planted]))
    assert any("zz_planted" in f for f in _comparisons(set(MODALITIES), "modalities",
                                                       [planted]))


SCRIPT_MODULES = """
import importlib, json, sys
from pathlib import Path
loaded = set()
for name in sys.argv[1:]:
    importlib.import_module(name)
files = sorted({str(Path(m.__file__).resolve()) for n, m in sys.modules.items()
                if n.startswith("dlworkflow") and getattr(m, "__file__", None)})
print(json.dumps(files))
"""


@pytest.mark.parametrize("step", [s for s in STEPS if s.name != "features"] + [
    next(s for s in STEPS if s.name == "features")], ids=lambda s: s.name)
def test_each_stage_depends_on_every_module_its_scripts_load(step):
    """Import what the step's scripts import, in a fresh interpreter, and check that every
    package module Python then holds is a dep of the stage in dvc.yaml (the generator
    derives them from the source; this checks it from what Python actually loads)."""
    from dlworkflow.workflow import step_code

    modules = set()
    for script in [c for c in step.code if c.startswith("scripts/")]:
        for node in ast.walk(ast.parse((REPO / script).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlworkflow"):
                modules.add(node.module)
    done = subprocess.run([sys.executable, "-c", SCRIPT_MODULES, *sorted(modules)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    loaded = {str(Path(f).relative_to(REPO)) for f in json.loads(done.stdout)}
    loaded.discard("src/dlworkflow/__init__.py")
    deps = set(step_code(step))  # what its code digest hashes (the stage's dep)
    assert loaded and loaded <= deps, sorted(loaded - deps)


def test_committed_stages_list_the_library_modules_they_run(tmp_path):
    """Each stage depends on its code digest, and the digest hashes the modules it runs
    (the bug this guards against: baseline and train did not list modalities/ or
    metrics.py); editing one module changes the digests of the steps that run it only."""
    from dlworkflow.config import load_params
    from dlworkflow.dvcstate import code_digest_path, write_code_digests
    from dlworkflow.workflow import get_step, step_code

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("baseline", "train", "final"):
        assert code_digest_path(name) in stages[name]["deps"]
        for module in ("src/dlworkflow/modalities/image.py", "src/dlworkflow/metrics.py",
                       "src/dlworkflow/tasks/classification.py", "src/dlworkflow/data.py"):
            assert module in step_code(get_step(name)), (name, module)
    assert "src/dlworkflow/train.py" not in step_code(get_step("intake"))
    assert set(stages["code"]["outs"]) == {code_digest_path(s) for s in stages
                                           if s != "code"}
    # the digests of a copy, before and after an edit of the trainer
    import shutil

    for folder in ("rules", "schemas", "scripts", "src"):
        shutil.copytree(REPO / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    params = load_params(REPO / "params.yaml")
    write_code_digests(params, tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "results" / ".steps").iterdir()}
    with (tmp_path / "src" / "dlworkflow" / "train.py").open("a") as source:
        source.write("\n# an edit\n")
    write_code_digests(params, tmp_path)
    after = {p.name: p.read_bytes() for p in (tmp_path / "results" / ".steps").iterdir()}
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == ["code-final.json", "code-train.json"], changed


def test_imports_in_snakemake_files_are_read_in_either_form(tmp_path):
    from dlworkflow.imports import direct_imports

    rules = tmp_path / "common.smk"
    rules.write_text("from dlworkflow.config import (\n    dataset_section,\n    split_settings,\n"
                     ")  # noqa: E402\nfrom dlworkflow.shardfile import shard_names  # noqa\n"
                     "import dlworkflow.workflow\n")
    assert direct_imports(rules, SRC) == {"dlworkflow.config", "dlworkflow.shardfile",
                                          "dlworkflow.workflow"}


def test_demo_data_does_not_depend_on_the_modalities():
    """Editing a modality reruns the steps that run it, not the demo data preparation."""
    from dlworkflow.workflow import get_step, step_code

    code = step_code(get_step("demo_data"))
    assert not any("/modalities/" in dep for dep in code)
    assert "src/dlworkflow/config.py" in code  # it resolves the params


def test_gpus_are_counted_from_the_device_files_unless_the_environment_says(tmp_path):
    from dlworkflow.workflow import visible_gpus

    assert visible_gpus({}, dev=tmp_path) == 0
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):  # control files are not GPUs
        (tmp_path / name).touch()
    assert visible_gpus({}, dev=tmp_path) == 2
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, dev=tmp_path) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, dev=tmp_path) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}, dev=tmp_path) == 1
    assert visible_gpus({"DLWORKFLOW_GPUS": "1"}, dev=tmp_path) == 1
    assert visible_gpus({"DLWORKFLOW_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}, dev=tmp_path) == 0
