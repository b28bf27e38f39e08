"""Source layouts: how the raw items of a dataset are found, labelled and grouped.

A layout turns a dataset root plus its `layout:` params into `Item`s and `Rejection`s.
It never reads item content (that is the modality's probe); it only reads listing
files (a manifest, a delimited text file, a long or wide CSV). Anything that cannot
become an item is rejected with a reason, never silently skipped.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from dlworkflow.errors import BadInput, ConfigError
from dlworkflow.items import Item, Rejection

RESERVED_FIELDS = ("label", "group", "id")
#: what a text that does not decode tells its user to do (SUBJ's and TREC's files are Latin-1)
ENCODING_HINT = (" (a file in another encoding: set `encoding` in the dataset's layout, "
                 "e.g. latin-1 or cp1252)")
#: bookkeeping files of tools and operating systems; never data, so never items
TOOL_FILES = frozenset({".snakemake_timestamp", ".gitignore", ".dvcignore", ".DS_Store",
                        "Thumbs.db", "desktop.ini"})


@dataclass
class Discovery:
    """What a layout found: the candidate items and the rejected would-be items."""

    items: list[Item] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def reject(self, path: str, reason: str, code: str, item_id: str | None = None) -> None:
        """Record a would-be item that cannot be used."""
        self.rejected.append(Rejection(path, reason, code, "discover", item_id))


@dataclass(frozen=True)
class LayoutContext:
    """Everything a layout needs besides its own params."""

    root: Path  # as configured (relative to the project), used for display
    task: Any  # the dataset's Task (dlworkflow.tasks): whether and how items are labelled
    extensions: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    # a file to predict (`dlworkflow predict`): read without labels or groups, whatever the
    # task; its label and group columns may be missing
    predicting: bool = False

    @property
    def labelled(self) -> bool:
        return bool(self.task.labelled) and not self.predicting

    def display(self, relative: str) -> str:
        return f"{PurePosixPath(self.root.as_posix()) / relative}"


# --------------------------------------------------------------------------- helpers


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob on relative POSIX paths (`**` spans folders, `*` does not)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


#: problems of links that duplicate an item (not unsafe: the item is read where it is)
LINK_PROBLEMS = ("link to ", "hard link to ")


def walk_files(root: Path) -> Iterator[tuple[str, Path | None, str | None]]:
    """Yield (relative path, real file, problem) for every file under root, sorted.

    The link policy: every real folder and file is read once, where it is, so a link never
    relabels an item (in the folders layout the first folder is the class).
    - A link to a folder is not followed; it is yielded with a problem saying where it
      points (a folder inside root is read where it is; one outside root is refused).
    - A link to a file outside root, or a broken link, is refused. A link to a file that is
      an item itself is a duplicate, refused naming that item; a link to a file inside root
      that is not otherwise an item is read under the link's name.
    - Hard links (one file under several names): the first name in sorted order is read,
      the others are refused naming it.
    """
    real_root = root.resolve()
    files: list[tuple[str, Path]] = []
    links: list[tuple[str, Path]] = []
    problems: list[tuple[str, None, str]] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        for entry in os.scandir(directory):
            if entry.name in TOOL_FILES:
                continue
            relative = f"{prefix}{entry.name}"
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not target.exists():
                    problems.append((relative, None, "broken symbolic link"))
                elif not target.is_relative_to(real_root):
                    problems.append((relative, None, "symbolic link points outside the dataset "
                                     f"folder (-> {target})"))
                elif target.is_dir():
                    inside = target.relative_to(real_root).as_posix()
                    problems.append((relative, None, f"link to the folder {inside!r} inside the "
                                     "dataset: not followed (each folder is read once, where "
                                     "it is, so a link never relabels its files)"))
                elif target.is_file():
                    links.append((relative, target))
                else:
                    problems.append((relative, None, "not a regular file"))
            elif entry.is_dir(follow_symlinks=False):
                stack.append((path, relative + "/"))
            elif entry.is_file(follow_symlinks=False):
                files.append((relative, path))
            else:
                problems.append((relative, None, "not a regular file"))
    rows: list[tuple[str, Path | None, str | None]] = list(problems)
    first: dict[tuple[int, int], str] = {}  # (device, inode) -> the name it is read as
    # real files first (a hard link loses to the name sorted first), then file links
    for entries, duplicate in ((sorted(files), "hard link to {!r}: the file is read once, as {!r}"),
                               (sorted(links), "link to {!r}, which is an item itself: read "
                                               "once, as {!r}")):
        for relative, path in entries:
            status = path.stat()
            key = (status.st_dev, status.st_ino)
            if key in first:
                rows.append((relative, None, duplicate.format(first[key], first[key])))
                continue
            first[key] = relative
            rows.append((relative, path.resolve(), None))
    yield from sorted(rows, key=lambda row: row[0])


def _sorted_walk(root: Path) -> list[tuple[str, Path | None, str | None]]:
    return sorted(walk_files(root), key=lambda row: row[0])


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve `relative` under root, or raise BadInput when it escapes root."""
    candidate = Path(relative)
    full = candidate if candidate.is_absolute() else root / candidate
    real = full.resolve()
    if not real.is_relative_to(root.resolve()):
        what = "symbolic link" if full.is_symlink() else "path"
        raise BadInput(f"{what} {relative!r} escapes the dataset folder", "outside_root")
    if not real.exists():
        raise BadInput(f"file {relative!r} not found", "missing_file")
    if not real.is_file():
        raise BadInput(f"{relative!r} is not a regular file", "not_a_file")
    return real


def is_missing(value: Any) -> bool:
    """True for None, a float NaN and blank strings."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _check_extension(relative: str, ctx: LayoutContext) -> None:
    suffix = PurePosixPath(relative).suffix.lower()
    if ctx.extensions and suffix not in ctx.extensions:
        raise BadInput(
            f"extension {suffix or '(none)'!r} is not one of {', '.join(ctx.extensions)}",
            "bad_extension",
        )


def _excluded(relative: str, ctx: LayoutContext) -> bool:
    return any(glob_to_regex(p).match(relative) for p in ctx.exclude)


def _candidate_files(root: Path, ctx: LayoutContext, found: Discovery, glob: str = "**/*"):
    """Yield (relative, real path) of files that match glob, rejecting unsafe ones."""
    matcher = glob_to_regex(glob)
    for relative, real, problem in _sorted_walk(root):
        if _excluded(relative, ctx) or not matcher.match(relative):
            continue
        if problem:
            found.reject(ctx.display(relative), problem,
                         "duplicate_link" if problem.startswith(LINK_PROBLEMS) else "unsafe_path")
            continue
        try:
            _check_extension(relative, ctx)
        except BadInput as exc:
            found.reject(ctx.display(relative), exc.reason, exc.code)
            continue
        yield relative, real


# --------------------------------------------------------------------------- layouts


def discover_folders(root: Path, layout: Mapping[str, Any], ctx: LayoutContext) -> Discovery:
    """`<root>/<label>/<file>`: the first folder level is the label."""
    found = Discovery()
    for relative, real in _candidate_files(root, ctx, found):
        parts = PurePosixPath(relative).parts
        if len(parts) < 2:
            found.reject(ctx.display(relative),
                         "not inside a class folder (the folders layout reads <root>/<label>/<file>)",
                         "no_class_folder")
            continue
        try:
            label = ctx.task.parse_label(parts[0]) if ctx.labelled else None
        except BadInput as exc:
            found.reject(ctx.display(relative), exc.reason, exc.code)
            continue
        found.items.append(Item(id=relative, path=ctx.display(relative), label=label, file=real))
    return found


def discover_filename_regex(root: Path, layout: Mapping[str, Any], ctx: LayoutContext) -> Discovery:
    """Label, group, id and side fields parsed from each file name by named regex groups."""
    found = Discovery()
    pattern = re.compile(layout["regex"])
    for relative, real in _candidate_files(root, ctx, found, layout.get("glob", "**/*")):
        subject = PurePosixPath(relative).name if layout.get("match", "name") == "name" else relative
        match = pattern.fullmatch(subject)
        if not match:
            found.reject(ctx.display(relative),
                         f"file name {subject!r} does not match layout.regex {pattern.pattern!r}",
                         "name_mismatch")
            continue
        fields = match.groupdict()
        try:
            label = ctx.task.parse_label(fields.get("label")) if ctx.labelled else None
        except BadInput as exc:
            found.reject(ctx.display(relative), exc.reason, exc.code)
            continue
        side = {k: v for k, v in fields.items() if k not in RESERVED_FIELDS}
        found.items.append(Item(id=fields.get("id") or relative, path=ctx.display(relative),
                                label=label, group=fields.get("group"), side=side, file=real))
    return found


def _read_table(path: Path, fmt: str, encoding: str, key: str) -> pd.DataFrame:
    """Read a manifest-like table as strings; decoding problems are config errors."""
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}: {path} is not valid {encoding} at byte offset {exc.start}; "
                          "set layout.encoding") from None
    text = text.lstrip("\ufeff")
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: {path} line {number} is not valid JSON ({exc.msg})") from None
        return pd.DataFrame(rows, dtype=object)
    sep = "\t" if fmt == "tsv" else ","
    return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)


def _require_columns(table: pd.DataFrame, columns: Mapping[str, str | None], key: str, path: Path):
    for option, column in columns.items():
        if column and column not in table.columns:
            raise ConfigError(f"{key}.{option}: column {column!r} not in {path.name} "
                              f"(columns: {', '.join(map(str, table.columns))})")


def discover_manifest(root: Path, layout: Mapping[str, Any], ctx: LayoutContext,
                      key: str = "layout") -> Discovery:
    """One row per item in a CSV/TSV/JSONL table: a path (or inline text) plus columns."""
    found = Discovery()
    file = root / layout["file"]
    fmt = layout.get("format") or {".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                                   ".ndjson": "jsonl"}.get(file.suffix.lower(), "csv")
    table = _read_table(file, fmt, layout.get("encoding", "utf-8"), key)
    columns = {name: layout.get(name) for name in
               ("path_column", "text_column", "label_column", "group_column", "id_column")}
    _require_columns(table, columns, key, file)
    _require_columns(table, {f"side_columns[{i}]": c for i, c in
                             enumerate(layout.get("side_columns", []))}, key, file)
    first_row = 1 if fmt == "jsonl" else 2  # 1-based line numbers, after a CSV header
    for offset, row in enumerate(table.to_dict("records")):
        number = first_row + offset
        where = f"{ctx.display(layout['file'])}:{number}"
        try:
            label = None
            if ctx.labelled:
                label = ctx.task.parse_label(row.get(columns["label_column"]))
            group = row.get(columns["group_column"]) if columns["group_column"] else None
            group = None if is_missing(group) else str(group)
            side = {c: row.get(c) for c in layout.get("side_columns", [])}
            if columns["path_column"]:
                relative = row.get(columns["path_column"])
                if is_missing(relative):
                    raise BadInput(f"row {number}: empty path", "missing_file")
                relative = str(relative)
                where = ctx.display(relative)
                real = resolve_inside(root, relative)
                _check_extension(relative, ctx)
                item_id = str(row.get(columns["id_column"]) or relative) if columns["id_column"] \
                    else relative
                found.items.append(Item(id=item_id, path=where, label=label, group=group,
                                        side=side, file=real))
            else:
                text = row.get(columns["text_column"])
                payload = b"" if is_missing(text) else str(text).encode("utf-8")
                item_id = str(row.get(columns["id_column"])) if columns["id_column"] \
                    else f"row-{number:06d}"
                found.items.append(Item(id=item_id, path=where, label=label, group=group,
                                        side=side, payload=payload))
        except BadInput as exc:
            reason = exc.reason if exc.reason.startswith("row ") else f"row {number}: {exc.reason}"
            found.reject(where, reason, exc.code)
    return found


def discover_delimited(root: Path, layout: Mapping[str, Any], ctx: LayoutContext) -> Discovery:
    """One item per line of a text file; the last field takes the rest of the line."""
    found = Discovery()
    fields: Sequence[str] = layout["fields"]
    encoding = layout.get("encoding", "utf-8")
    delimiter = layout["delimiter"].encode(encoding)
    raw = (root / layout["file"]).read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    for number, line in enumerate(lines, start=1):
        if number == 1 and layout.get("header"):
            continue
        line = line.removesuffix(b"\r")
        where = f"{ctx.display(layout['file'])}:{number}"
        try:
            if not line.strip():
                raise BadInput("empty line", "empty_line")
            parts = line.split(delimiter, len(fields) - 1)
            if len(parts) < len(fields):
                raise BadInput(f"expected {len(fields)} fields ({', '.join(fields)}) separated by "
                               f"{layout['delimiter']!r}, found {len(parts)}", "bad_row")
            values = dict(zip(fields, parts, strict=True))
            decoded = {}
            for name, value in values.items():
                if name == "text":
                    continue
                try:
                    decoded[name] = value.decode(encoding).strip()
                except UnicodeDecodeError as exc:
                    raise BadInput(f"field {name!r} is not valid {encoding} at byte offset "
                                   f"{exc.start}{ENCODING_HINT}", "not_utf8") from None
            label = ctx.task.parse_label(decoded.get("label")) if ctx.labelled else None
            side = {k: v for k, v in decoded.items() if k not in RESERVED_FIELDS}
            found.items.append(Item(id=decoded.get("id") or f"line-{number:06d}", path=where,
                                    label=label, group=decoded.get("group") or None, side=side,
                                    payload=values["text"]))
        except BadInput as exc:
            found.reject(where, f"line {number}: {exc.reason}", exc.code)
    return found


def _single_value(frame: pd.DataFrame, column: str | None, what: str) -> str | None:
    if not column:
        return None
    values = [v for v in frame[column].unique() if not is_missing(v)]
    if len(values) > 1:
        raise BadInput(f"{what} column {column!r} has {len(values)} different values in one series",
                       "inconsistent_series")
    return str(values[0]) if values else None


def discover_long_csv(root: Path, layout: Mapping[str, Any], ctx: LayoutContext,
                      key: str = "layout") -> Discovery:
    """A long table: each series_id (or the whole file) is one series item."""
    found = Discovery()
    file = root / layout["file"]
    table = _read_table(file, "csv", "utf-8", key)
    exogenous = list(layout.get("exogenous", []))
    side = _side_columns(layout, ctx)
    _require_columns(table, {"timestamp": layout["timestamp"], "target": layout["target"],
                             "series_id": layout.get("series_id"), **side}, key, file)
    _require_columns(table, {f"exogenous[{i}]": c for i, c in enumerate(exogenous)}, key, file)
    keep = [layout["timestamp"], layout["target"], *exogenous]
    if layout.get("series_id"):
        groups = [(str(k), g) for k, g in table.groupby(layout["series_id"], sort=True)]
    else:
        groups = [(file.stem, table)]
    for series_id, frame in groups:
        where = f"{ctx.display(layout['file'])}#{series_id}"
        try:
            label = None
            if ctx.labelled:
                label = ctx.task.parse_label(
                    _single_value(frame, layout.get("label_column"), "label"))
            group = _single_value(frame, side["group_column"], "group")
        except BadInput as exc:
            found.reject(where, f"series {series_id!r}: {exc.reason}", exc.code, series_id)
            continue
        payload = frame[keep].to_csv(index=False, lineterminator="\n").encode("utf-8")
        found.items.append(Item(id=series_id, path=where, label=label, group=group,
                                payload=payload))
    return found


def _side_columns(layout: Mapping[str, Any], ctx: LayoutContext) -> dict[str, str | None]:
    """The label and group columns a table must have: the label only where labels are read,
    neither in a file to predict (which may still hold them; they are never values)."""
    return {"label_column": layout.get("label_column") if ctx.labelled else None,
            "group_column": None if ctx.predicting else layout.get("group_column")}


def _continuations(root: Path, layout: Mapping[str, Any], key: str,
                   named: Mapping[str, Any]) -> dict[str, list[str]]:
    """`layout.test_file`: each series' next values, in a second table of the same shape (the
    M4's `*-test.csv`), by id; a series it lists that the main file lacks is an error."""
    if not layout.get("test_file"):
        return {}
    if not named["id_column"]:
        raise ConfigError(f"{key}.test_file: needs layout.id_column to match its rows")
    file = root / layout["test_file"]
    table = _read_table(file, "csv", "utf-8", f"{key}.test_file")
    _require_columns(table, {"id_column": named["id_column"]}, f"{key}.test_file", file)
    columns = [c for c in table.columns if c != named["id_column"]]
    return {str(row[named["id_column"]]): _trimmed([row[c] for c in columns])
            for row in table.to_dict("records")}


def _trimmed(cells: list[Any]) -> list[str]:
    """Cells as text, the empty ones after the last value dropped (the padding of a wide
    file whose rows have different lengths); a gap before it stays a missing value."""
    texts = ["nan" if is_missing(cell) else str(cell) for cell in cells]
    while texts and texts[-1] == "nan":
        texts.pop()
    return texts


def discover_wide_csv(root: Path, layout: Mapping[str, Any], ctx: LayoutContext,
                      key: str = "layout") -> Discovery:
    """One series per row; the value columns are the time steps in order, the empty cells
    after a row's last value are padding (rows may differ in length, as in the M4 files).
    `test_file` appends each series' next values from a second file (the M4's test file:
    they become the last steps, which the forecasting split holds out as the test)."""
    found = Discovery()
    file = root / layout["file"]
    table = _read_table(file, "csv", "utf-8", key)
    named = {"id_column": layout.get("id_column"), **_side_columns(layout, ctx)}
    _require_columns(table, named, key, file)
    # a label or group column is never a step, also where it is not read (a file to predict)
    others = {layout.get(option) for option in named}
    values = layout.get("value_columns") or [c for c in table.columns if c not in others]
    _require_columns(table, {f"value_columns[{i}]": c for i, c in enumerate(values)}, key, file)
    following = _continuations(root, layout, key, named)
    unknown = sorted(set(following) - {str(v) for v in table.get(named["id_column"], [])})
    if unknown:
        raise ConfigError(f"{key}.test_file: {len(unknown)} series not in {layout['file']}: "
                          f"{', '.join(unknown[:5])}")
    for offset, row in enumerate(table.to_dict("records")):
        number = offset + 2
        item_id = str(row[named["id_column"]]) if named["id_column"] else f"row-{number:06d}"
        where = f"{ctx.display(layout['file'])}:{number}"
        try:
            label = ctx.task.parse_label(row.get(named["label_column"])) if ctx.labelled else None
        except BadInput as exc:
            found.reject(where, f"row {number}: {exc.reason}", exc.code, item_id)
            continue
        group = row.get(named["group_column"]) if named["group_column"] else None
        # an empty cell must stay a row (a blank line would vanish from a one-column CSV)
        cells = _trimmed([row[c] for c in values])
        if layout.get("test_file"):
            if item_id not in following:
                found.reject(where, f"row {number}: series {item_id!r} has no values in "
                             f"{layout['test_file']}", "no_test_values", item_id)
                continue
            cells = cells + following[item_id]
        payload = ("value\n" + "\n".join(cells) + "\n").encode("utf-8")
        found.items.append(Item(id=item_id, path=where, label=label,
                                group=None if is_missing(group) else str(group), payload=payload))
    return found


def _ts_part(stem: str) -> str:
    """`train` / `test` for the UCR/UEA convention `<Problem>_TRAIN.ts` / `_TEST.ts`, else the
    file's stem."""
    upper = stem.upper()
    return "test" if upper.endswith("_TEST") else "train" if upper.endswith("_TRAIN") else stem


def ts_payload(dimensions: list[list[str]]) -> bytes:
    """A series of one or more dimensions as the series modality reads it: a `value` column
    (the first dimension) and `dim_1`, `dim_2`, ... beside it; a dimension shorter than the
    longest is padded with missing values (cut off again when tensorised)."""
    steps = max(len(values) for values in dimensions)
    columns = [[("nan" if v in ("?", "", "NaN") else v) for v in values]
               + ["nan"] * (steps - len(values)) for values in dimensions]
    names = ["value", *(f"dim_{k}" for k in range(1, len(columns)))]
    lines = [",".join(names), *(",".join(row) for row in zip(*columns, strict=True))]
    return ("\n".join(lines) + "\n").encode("utf-8")


#: the UCR/UEA archive's text tables (label first, no header): the 2018 archive's `.tsv`
#: and timeseriesclassification.com's `.txt`, which ships the same series as `.ts` beside it
TS_TABLES = (".tsv", ".txt")


def ts_files(root: Path, layout: Mapping[str, Any]) -> list[str]:
    """The files a `ts` layout reads: `layout.files`; else every `*.ts` in the root; else,
    where there is none, the `<Problem>_TRAIN` / `_TEST` tables of the first of `.tsv` and
    `.txt` the root has (never two copies of one archive's series, nor a README.txt)."""
    if layout.get("files"):
        return list(layout["files"])
    files = sorted(p.name for p in root.glob("*.ts") if p.is_file())
    for suffix in TS_TABLES:
        if files:
            break
        files = sorted(p.name for p in root.glob(f"*{suffix}")
                       if p.is_file() and _ts_part(p.stem) in ("train", "test"))
    return files


def discover_ts(root: Path, layout: Mapping[str, Any], ctx: LayoutContext) -> Discovery:
    """UCR/UEA archive files, each series an item with side column `part`: `train` or `test`
    from the `_TRAIN` / `_TEST` file name (the official split; `split.test` defaults to it).

    A `.ts` file (sktime's format) has a header of `@` lines, then one series per line,
    `v1,v2,...:label` (`?` a missing value; lengths may differ); a multivariate file's
    dimensions (`d1:d2:...:label`, the UEA archive's) become the series' channels. A label
    outside the header's `@classLabel` list, a series with another number of dimensions than
    the file's, and a timestamped file (not read yet) are rejected with the reason.
    A `.tsv` or `.txt` file (the UCR archive's tables) has no header: one series per line,
    the label first, then the values, split at tabs, commas or spaces (`NaN` a missing
    value; the missing values after the last one are the padding of a shorter series)."""
    found = Discovery()
    for name in ts_files(root, layout):
        try:
            path = resolve_inside(root, name)
        except BadInput as exc:
            found.reject(ctx.display(name), exc.reason, exc.code)
            continue
        if path.suffix.lower() in TS_TABLES:
            _read_ucr_table(found, name, path, ctx)
        else:
            _read_ts_file(found, name, path, ctx)
    return found


def _ts_lines(name: str, path: Path, ctx: LayoutContext, found: Discovery
              ) -> Iterator[tuple[int, str, str]]:
    """(line number, where, text) of each line of a UCR/UEA file that is not blank or a `#`
    comment; a line that is not UTF-8 is rejected naming its byte offset."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        line = raw.removesuffix(b"\r").rstrip()  # a table's first cell (the label) may be empty
        where = f"{ctx.display(name)}:{number}"
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        try:
            yield number, where, line.decode("utf-8")
        except UnicodeDecodeError as exc:
            found.reject(where, f"line {number}: not valid utf-8 at byte offset {exc.start}",
                         "not_utf8")


def _read_ts_file(found: Discovery, name: str, path: Path, ctx: LayoutContext) -> None:
    """The series of one `.ts` file into `found` (see `discover_ts`)."""
    part = _ts_part(Path(name).stem)
    header: dict[str, str] = {}
    data, row, dimensions = False, 0, 0
    for number, where, line in _ts_lines(name, path, ctx, found):
        text = line.strip()
        if not data:
            if text.startswith("@"):
                key, _, value = text[1:].partition(" ")
                header[key.lower()] = value.strip()
                data = key.lower() == "data"
            continue
        row += 1
        item_id = f"{Path(name).stem}-{row:05d}"
        try:
            if header.get("timestamps", "false").lower() == "true":
                raise BadInput("timestamped .ts series are not read yet; write them as a "
                               "long_csv layout", "unsupported")
            fields = text.split(":")
            labelled = header.get("classlabel", "false").split()[:1] == ["true"] or \
                header.get("targetlabel", "false").lower() == "true"
            label_text = fields.pop().strip() if labelled else None
            stated = int(header.get("dimensions") or 0) or dimensions or len(fields)
            if len(fields) != stated:
                raise BadInput(f"{len(fields)} dimension(s) where the file has {stated} "
                               "(@dimensions or its first series)", "bad_columns")
            dimensions = stated
            values = [[v.strip() for v in field.split(",")] for field in fields]
            if not any(any(v not in ("", "?") for v in dim) for dim in values):
                raise BadInput("no values", "empty")
            classes = header.get("classlabel", "").split()[1:]
            if classes and label_text not in classes:
                raise BadInput(f"label {label_text!r} is not among the @classLabel values "
                               f"({', '.join(classes)})", "bad_label")
            label = ctx.task.parse_label(label_text) if ctx.labelled else None
        except BadInput as exc:
            found.reject(where, f"line {number}: {exc.reason}", exc.code, item_id)
            continue
        found.items.append(Item(id=item_id, path=where, label=label, side={"part": part},
                                payload=ts_payload(values)))
    if not data:
        found.reject(ctx.display(name), "no @data line: not a .ts file", "unreadable")


def _ucr_label(text: str) -> str:
    """A UCR table's class as the archive's `.ts` file writes it: `1.0000000e+00` (the
    `.txt` tables write every class as a float) is `1`; any other text stays as it is."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _read_ucr_table(found: Discovery, name: str, path: Path, ctx: LayoutContext) -> None:
    """The series of one UCR `.tsv` / `.txt` table into `found` (see `discover_ts`)."""
    part = _ts_part(Path(name).stem)
    for row, (number, where, text) in enumerate(_ts_lines(name, path, ctx, found), start=1):
        item_id = f"{Path(name).stem}-{row:05d}"
        separator = "\t" if "\t" in text else "," if "," in text else None
        label_text, *cells = [cell.strip() for cell in text.split(separator)]
        values = _trimmed(["" if v.lower() == "nan" else v for v in cells])
        try:
            if not values:
                raise BadInput("no values after the label (the first column)", "empty")
            label = ctx.task.parse_label(_ucr_label(label_text)) if ctx.labelled else None
        except BadInput as exc:
            found.reject(where, f"line {number}: {exc.reason}", exc.code, item_id)
            continue
        found.items.append(Item(id=item_id, path=where, label=label, side={"part": part},
                                payload=ts_payload([values])))


#: Monash `.tsf` frequencies as pandas aliases (the MASE season follows from the alias)
TSF_FREQUENCIES = {"yearly": "Y", "quarterly": "Q", "monthly": "M", "weekly": "W", "daily": "D",
                   "hourly": "H", "half_hourly": "30min", "10_minutes": "10min",
                   "minutely": "min", "4_seconds": "4s"}


def tsf_header(path: Path) -> dict[str, Any]:
    """The header of a Monash `.tsf` file (Godahewa et al. 2021): `attributes` [(name,
    type)] in order, and `frequency`, `horizon`, `missing`, `equallength` as written; the
    lines before `@data` only."""
    header: dict[str, Any] = {"attributes": []}
    with path.open("rb") as stream:
        for raw in stream:
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            if not line.startswith(b"@"):
                raise BadInput("a data line before @data: not a .tsf file", "unreadable")
            key, _, value = line[1:].decode("utf-8", "replace").partition(" ")
            key, value = key.lower(), value.strip()
            if key == "data":
                header["data"] = True
                return header
            if key == "attribute":
                name, _, kind = value.partition(" ")
                header["attributes"].append((name, kind.strip().lower()))
            else:
                header[key] = value
    raise BadInput("no @data line: not a .tsf file", "unreadable")


def tsf_file(root: Path, layout: Mapping[str, Any]) -> str | None:
    """The `.tsf` file a `tsf` layout reads: `layout.file`, or the one `*.tsf` in the root."""
    if layout.get("file"):
        return str(layout["file"])
    found = sorted(p.name for p in root.glob("*.tsf") if p.is_file())
    return found[0] if len(found) == 1 else None


def tsf_horizon(root: Path, layout: Mapping[str, Any]) -> int | None:
    """The forecast horizon a `.tsf` file's `@horizon` states (None when absent or unreadable:
    split.horizon then decides)."""
    name = tsf_file(root, layout)
    try:
        value = tsf_header(resolve_inside(root, name)).get("horizon") if name else None
        return int(value) if value else None
    except (BadInput, OSError, ValueError):
        return None


def discover_tsf(root: Path, layout: Mapping[str, Any], ctx: LayoutContext) -> Discovery:
    """A Monash `.tsf` file: a header (`@attribute` lines, `@frequency`, `@horizon`, ...),
    then one series per line, its attribute values and then its comma-separated values, all
    separated by colons (`?` a missing value). Each series is an item named by its first
    string attribute (`series_name`), with the header's frequency; a line with the wrong
    number of fields or no values is rejected with its line number."""
    found = Discovery()
    name = tsf_file(root, layout)
    if name is None:
        raise ConfigError(f"layout: no single .tsf file in {ctx.display('.')}; set layout.file")
    path = resolve_inside(root, name)
    try:
        header = tsf_header(path)
    except BadInput as exc:
        found.reject(ctx.display(name), exc.reason, exc.code)
        return found
    attributes = header["attributes"]
    named = next((i for i, (_, kind) in enumerate(attributes) if kind == "string"), None)
    written = str(header.get("frequency") or "").lower()
    frequency = layout.get("frequency") or TSF_FREQUENCIES.get(written)
    seen: set[str] = set()
    data = False
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        line = raw.removesuffix(b"\r").strip()
        if not data:
            data = line.lower().startswith(b"@data")
            continue
        if not line or line.startswith(b"#"):
            continue
        where = f"{ctx.display(name)}:{number}"
        item_id = f"row-{number:06d}"
        try:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"not valid utf-8 at byte offset {exc.start}", "not_utf8") from None
            fields = text.split(":")
            if len(fields) != len(attributes) + 1:
                raise BadInput(f"{len(fields)} colon-separated fields; the header's "
                               f"{len(attributes)} attribute(s) and the values make "
                               f"{len(attributes) + 1}", "bad_columns")
            if named is not None:
                item_id = fields[named].strip()
                if not item_id or item_id in seen:
                    raise BadInput(f"series name {item_id!r} is empty or repeated",
                                   "duplicate_id")
            seen.add(item_id)
            values = [v.strip() for v in fields[-1].split(",")]
            if not any(v not in ("", "?") for v in values):
                raise BadInput("no values", "empty")
        except BadInput as exc:
            found.reject(where, f"line {number}: {exc.reason}", exc.code, item_id)
            continue
        side = {"frequency": frequency} if frequency else {}
        found.items.append(Item(id=item_id, path=where, side=side, payload=ts_payload([values])))
    return found


LAYOUTS: dict[str, Callable[..., Discovery]] = {
    "folders": discover_folders,
    "filename_regex": discover_filename_regex,
    "manifest": discover_manifest,
    "delimited": discover_delimited,
    "long_csv": discover_long_csv,
    "wide_csv": discover_wide_csv,
    "ts": discover_ts,
    "tsf": discover_tsf,
}


def discover(root: Path, layout: Mapping[str, Any], ctx: LayoutContext) -> Discovery:
    """Run the layout named by `layout['kind']` over root."""
    try:
        function = LAYOUTS[layout["kind"]]
    except KeyError:
        raise ConfigError(f"layout.kind: {layout['kind']!r} is not one of "
                          f"{', '.join(LAYOUTS)}") from None
    return function(root, layout, ctx)
