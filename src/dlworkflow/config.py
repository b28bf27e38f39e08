"""Load and validate params.yaml: the schema (with defaults) plus checks a schema cannot express.

Every problem is reported in one message that names the key (`datasets.sms.layout.file`)
and what is allowed, so a bad config stops before any job starts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dlworkflow.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "params.schema.yaml"


@cache
def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Return the params schema (read once)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _extend_with_defaults(validator_class: type) -> type:
    """Return a validator class that fills `default` values of properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _extend_with_defaults(jsonschema.Draft202012Validator)


def key_path(parts: Iterable[Any]) -> str:
    """Render a JSON path as the dotted key a person would type (`datasets.sms.layout`)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """Turn one jsonschema error into `key: what is wrong; what is allowed`."""
    where = key_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        prefix = f"{where}." if error.absolute_path else ""
        names = ", ".join(f"{prefix}{e}" for e in extra)
        return f"unknown key {names}; allowed keys here: {', '.join(allowed)}"
    if error.validator == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not allowed; choose one of: {allowed}"
    if error.validator == "const":
        return f"{where}: must be {error.validator_value!r}"
    if error.validator == "required":
        missing = [r for r in error.validator_value if r not in (error.instance or {})]
        prefix = f"{where}." if error.absolute_path else ""
        return f"missing required key {', '.join(prefix + m for m in missing)}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}: {error.instance!r} has the wrong type; expected {expected}"
    if error.validator == "pattern" and error.absolute_path and error.path:
        return f"{where}: {error.message}"
    description = schema.get("description")
    hint = f" ({description})" if description else ""
    return f"{where}: {error.message}{hint}"


def _leaf_errors(errors: Iterable[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """Expand if/then and allOf wrappers so each reported error is a concrete one."""
    out = []
    for error in errors:
        if error.context:
            out.extend(_leaf_errors(error.context))
        else:
            out.append(error)
    return out


def validate_schema(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return (params with defaults filled, list of schema problems)."""
    resolved = copy.deepcopy(dict(params))
    validator = _DefaultingValidator(load_schema())
    errors = _leaf_errors(validator.iter_errors(resolved))
    messages = sorted({_describe(e) for e in errors})
    return resolved, messages


def _inside(root: Path, relative: str) -> bool:
    """True when `relative` resolves to a path inside `root`."""
    try:
        (root / relative).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _check_dataset(name: str, ds: dict[str, Any], base_dir: Path) -> list[str]:
    """Checks on one dataset entry that the schema cannot express."""
    from dlworkflow.modalities import get_modality_class
    from dlworkflow.tasks import TASKS

    key = f"datasets.{name}"
    problems: list[str] = []
    try:
        modality = get_modality_class(ds["modality"])
    except ConfigError as exc:
        return [f"{key}.modality: {exc}"]
    layout = ds["layout"]
    kind = layout["kind"]
    if kind not in modality.layouts:
        problems.append(
            f"{key}.layout.kind: {kind!r} is not available for modality {modality.name!r}; "
            f"choose one of: {', '.join(modality.layouts)}"
        )
    if ds["task"] not in modality.tasks:
        problems.append(
            f"{key}.task: {ds['task']!r} is not available for modality {modality.name!r}; "
            f"choose one of: {', '.join(modality.tasks)}"
        )
    if "encoding" in layout:
        import codecs

        try:
            encoding = codecs.lookup(layout["encoding"]).name
        except LookupError:
            encoding = None
            problems.append(f"{key}.layout.encoding: {layout['encoding']!r} is not an encoding "
                            "Python knows (utf-8, latin-1, cp1252, ...)")
        if encoding not in (None, "utf-8") and kind in ("folders", "filename_regex") \
                and not modality.decodes_text:
            problems.append(f"{key}.layout.encoding: only text files are decoded; "
                            f"{modality.name} files are read as they are (remove the key)")
    task = TASKS[ds["task"]]  # the schema's enum names only registered tasks
    labelled = task.labelled
    if kind == "filename_regex":
        try:
            pattern = re.compile(layout["regex"])
        except re.error as exc:
            problems.append(f"{key}.layout.regex: not a valid regular expression ({exc})")
        else:
            if labelled and "label" not in pattern.groupindex:
                problems.append(
                    f"{key}.layout.regex: needs a named group (?P<label>...) for a "
                    f"{ds['task']} task; it has: {', '.join(pattern.groupindex) or 'none'}"
                )
    if kind == "manifest":
        has_path, has_text = "path_column" in layout, "text_column" in layout
        if has_path == has_text:
            problems.append(f"{key}.layout: give exactly one of path_column or text_column")
        if has_text and not modality.inline_text:
            problems.append(f"{key}.layout.text_column: only for modality text; use path_column")
    if kind == "delimited" and "text" not in layout["fields"]:
        problems.append(f"{key}.layout.fields: must contain 'text'; got {layout['fields']}")
    if labelled and kind == "delimited" and "label" not in layout["fields"]:
        problems.append(f"{key}.layout.fields: a {ds['task']} task needs a 'label' field")
    if labelled and kind in ("manifest", "wide_csv") and not layout.get("label_column"):
        problems.append(f"{key}.layout.label_column: a {ds['task']} task needs a label column")
    if task.layout_kinds is not None and kind not in task.layout_kinds:
        problems.append(f"{key}.layout.kind: {task.name} reads a {' or '.join(task.layout_kinds)} "
                        f"layout, not {kind!r}")

    root = base_dir / ds["root"]
    if ds.get("demo") and Path(ds["root"]).as_posix().rstrip("/") != f"data/raw/{name}":
        problems.append(f"{key}.root: a demo dataset is written to data/raw/{name}; "
                        f"got {ds['root']!r}")
    if not ds.get("demo"):
        if not root.is_dir():
            problems.append(f"{key}.root: folder {ds['root']} does not exist (relative to {base_dir})")
        else:
            for sub, rel in (("layout.file", layout.get("file")),
                             ("layout.test_file", layout.get("test_file")),
                             ("side_table.file", (ds.get("side_table") or {}).get("file"))):
                if rel is None:
                    continue
                if not _inside(root, rel):
                    problems.append(f"{key}.{sub}: {rel} points outside the dataset root {ds['root']}")
                elif not (root / rel).is_file():
                    problems.append(f"{key}.{sub}: file {ds['root']}/{rel} does not exist")
            if kind == "ts":
                from dlworkflow.layouts import ts_files

                files = ts_files(root, layout)
                if not files:
                    problems.append(f"{key}.layout: no .ts file in {ds['root']}, nor a UCR "
                                    "<Problem>_TRAIN / _TEST .tsv or .txt table")
                for number, rel in enumerate(files):
                    if not _inside(root, rel) or not (root / rel).is_file():
                        problems.append(f"{key}.layout.files[{number}]: no file {rel} inside "
                                        f"{ds['root']}")
            if kind == "tsf":
                from dlworkflow.layouts import tsf_file

                if tsf_file(root, layout) is None:
                    problems.append(f"{key}.layout: not exactly one .tsf file in {ds['root']}; "
                                    "set layout.file")
    return problems


#: top-level sections a dataset may override key by key (`datasets.<name>.tensors: {...}`)
OVERRIDABLE = ("tensors", "augment", "baseline", "train", "final")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """`base` with `override`'s keys replacing its own, nested mappings merged key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def split_settings(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The dataset's split settings: the top-level section updated by its own `split:`. A
    `ts` layout's official TEST file is the test set unless `split.test` says otherwise; a
    `tsf` file's `@horizon` is the horizon unless the dataset's `split.horizon` says
    otherwise (the root read relative to the working directory, the project's)."""
    dataset = params["datasets"][name]
    merged = {**params["split"], **(dataset.get("split") or {})}
    layout = dataset.get("layout", {})
    if layout.get("kind") == "ts" and not merged.get("test"):
        merged["test"] = {"column": "side_part", "values": ["test"]}
    if layout.get("kind") == "tsf" and "horizon" not in (dataset.get("split") or {}):
        from dlworkflow.layouts import tsf_horizon

        # the file states the horizon its series are forecast at (the Monash archive's
        # protocol); the dataset's own split.horizon overrides it
        root = Path(dataset.get("root") or f"data/raw/{name}")
        merged["horizon"] = tsf_horizon(root, layout) or merged["horizon"]
    return merged


def dataset_section(params: Mapping[str, Any], name: str, section: str) -> dict[str, Any]:
    """The top-level `section` as dataset `name` sees it, with its own overrides merged in."""
    return deep_merge(params.get(section) or {}, params["datasets"][name].get(section))


def _check_overrides(resolved: dict[str, Any]) -> list[str]:
    """Each dataset's merged sections must pass the same schema as the top-level ones."""
    problems = []
    for name, ds in resolved["datasets"].items():
        for section in OVERRIDABLE:
            if not ds.get(section):
                continue
            trial = {**resolved, section: dataset_section(resolved, name, section)}
            for problem in validate_schema(trial)[1]:
                if problem.startswith(section) or f" {section}." in problem:
                    problems.append(problem.replace(section, f"datasets.{name}.{section}", 1))
    return problems


def _check_audio_storage(resolved: dict[str, Any]) -> list[str]:
    """Only log-mels are stored as uint8. 256 levels over a shard's whole range lose all of
    a waveform that is 48 dB below its loudest sample, and the small MFCCs beside c0's
    large ones; `dlworkflow predict`, which decodes at full precision, then disagrees with
    every model trained on them (FSDD at 30 a class, quick runs: the baseline's CV 0.81
    against 0.72 for waveforms, 0.79 against 0.73 for MFCCs, and its predictions off by up
    to 0.99 and 0.22 in probability; log-mels: 0.02)."""
    places = {"": (resolved.get("tensors") or {}).get("audio") or {}}
    for name, ds in resolved["datasets"].items():
        if ((ds.get("tensors") or {}).get("audio")):  # its own audio settings, merged
            places[f"datasets.{name}."] = dataset_section(resolved, name, "tensors")["audio"]
    return [f"{where}tensors.audio.storage: uint8 with representation: "
            f"{audio['representation']} quantises every value to 256 levels of the shard's "
            "range, which loses its small values (FSDD at 30 a class: the baseline's CV fell "
            "by 0.06-0.09, and predictions on the raw files no longer matched the models'); "
            "uint8 is for logmel, use storage: float16"
            for where, audio in places.items()
            if audio.get("representation") in ("waveform", "mfcc")
            and audio.get("storage") == "uint8"]


def _check_final_model(resolved: dict[str, Any]) -> list[str]:
    """`final.model: baseline` ships the exported baseline, which `final.baseline: false`
    does not export: said here, before the run, not by the final step after the folds."""
    places = {"": resolved.get("final") or {}}
    for name, ds in resolved["datasets"].items():
        if ds.get("final"):  # its own final settings, merged
            places[f"datasets.{name}."] = dataset_section(resolved, name, "final")
    return [f"{where}final.model: baseline ships the exported baseline, but final.baseline: "
            "false exports none; set final.baseline: true, or final.model: auto or network"
            for where, final in places.items()
            if final.get("model") == "baseline" and final.get("baseline") is False]


#: the demo datasets' entries (`datasets.<name>: {demo: <source>}` is filled in from these)
DEMO_DATASETS_PATH = SCHEMA_PATH.with_name("demo_datasets.yaml")


def expand_datasets(params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with each dataset entry completed: a demo dataset's entry from
    schemas/demo_datasets.yaml under what params.yaml says (its keys win, merged key by key;
    a written `layout` replaces the demo's whole), and `root` defaulting to data/raw/<name>."""
    expanded = copy.deepcopy(dict(params))
    datasets = expanded.get("datasets")
    if not isinstance(datasets, Mapping):
        return expanded
    demos = yaml.safe_load(DEMO_DATASETS_PATH.read_text(encoding="utf-8"))
    for name, entry in datasets.items():
        if not isinstance(entry, Mapping):
            continue
        source = entry.get("demo")
        known = demos.get(source) if isinstance(source, str) else None
        base = dict(known or {})
        if "layout" in entry:  # a layout of another kind shares no keys with the demo's
            base.pop("layout", None)
        entry = deep_merge(base, entry)
        entry.setdefault("root", f"data/raw/{name}")
        datasets[name] = entry
    return expanded


def validate_params(params: Mapping[str, Any], base_dir: str | Path = ".") -> dict[str, Any]:
    """Validate params.yaml content; return it with defaults filled or raise ConfigError."""
    if not isinstance(params, Mapping):
        raise ConfigError("params.yaml: the top level must be a mapping of keys to values")
    resolved, problems = validate_schema(expand_datasets(params))
    if not problems:
        problems.extend(_check_overrides(resolved))
        problems.extend(_check_audio_storage(resolved))
        problems.extend(_check_final_model(resolved))
        for name, ds in resolved["datasets"].items():
            problems.extend(_check_dataset(name, ds, Path(base_dir)))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"params.yaml is invalid ({len(problems)} problem(s)):\n{lines}")
    return resolved


def read_written(path: str | Path = "params.yaml") -> dict[str, Any]:
    """A params file as written (no defaults filled, nothing checked)."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return params or {}


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read, validate and resolve a params file; paths are relative to its folder."""
    return validate_params(read_written(path), base_dir=Path(path).parent)
