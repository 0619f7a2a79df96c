"""The results store: one SQLite row per evaluated cell, so tables regenerate from cache and an
interrupted run resumes where it stopped.

A cell is one number-producing unit of work (a model, purifier, attack, threat model and data
slice). Its key is the SHA-256 of the canonical JSON of its resolved config, which must include the
model card hashes, so retrained weights never reuse stale numbers. Each row also records what is
needed to trust or reproduce it: git commit, seed, library versions and timings.

SQLite in WAL mode with a busy timeout lets several processes (e.g. `accelerate launch` ranks)
write at once; each `put` is one IMMEDIATE transaction, so a killed process leaves either the
whole row or nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.errors import PurifyLabError
from core.paths import REPO_ROOT

TRACKED_LIBRARIES = ("torch", "timm", "diffusers", "torchattacks")
# What a CLI output's provenance names (core.cli.reporting.provenance_of): the store's libraries, numpy and
# PurifyLab itself. The store keeps recording TRACKED_LIBRARIES only, so its rows keep one layout.
PROVENANCE_LIBRARIES = (*TRACKED_LIBRARIES, "numpy", "purifylab")
BUSY_TIMEOUT_MS = 60_000
# PRAGMA user_version of a store this code writes; 0 is a store made before the version was recorded
# (the same layout). A store of a later version is refused rather than written in the wrong layout.
# 2: budgets count the purifier draws actually spent (`_count_spent_draws`).
SCHEMA_VERSION = 2
_SQLITE_HEADER = b"SQLite format 3\x00"  # the first bytes of every SQLite database file
COLUMNS = ("key", "preset", "config", "metrics", "git_commit", "seed", "versions", "seconds", "created_at")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    preset TEXT,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    git_commit TEXT NOT NULL,
    seed INTEGER,
    versions TEXT NOT NULL,
    seconds REAL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_preset ON cells (preset);
CREATE TABLE IF NOT EXISTS data_contents (
    names TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    location TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise PurifyLabError(f"value {value} cannot be stored; results must be finite numbers or null")
    raise PurifyLabError(f"value of type {type(value).__name__} cannot be stored as JSON; convert it first")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same config always gives the same bytes."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain, allow_nan=False)
    except ValueError as error:
        raise PurifyLabError(f"results must be finite numbers or null ({error})") from None


def keyed_config(cell_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config a cell is stored and found under: a cell with an attack gains the fields that say how
    that attack runs where this changed (core.attacks.robust.key_fields); any other cell is as given."""
    if not cell_config.get("attack"):
        return cell_config
    from core.attacks.robust import key_fields  # only for attacked cells, which need torchattacks anyway

    return {**cell_config, **key_fields(cell_config)}


def cell_key(cell_config: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(keyed_config(cell_config)).encode()).hexdigest()


@cache
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty(root: Path = REPO_ROOT) -> bool | None:
    """True when the checkout has uncommitted or untracked changes outside results/: then the commit
    alone does not name the code, configs or weights that ran. The outputs are left out, since a run
    that writes several (a table re-render, a benchmark's report and its config) would otherwise call
    every one after the first dirty by the first. None outside a git checkout or without git."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":(exclude)results"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(status.stdout.strip())


def software_provenance() -> dict[str, Any]:
    """The library versions and the git commit (and whether the checkout differed from it) that
    produced an output: beside every CLI output and in every weights card."""
    return {**library_versions(PROVENANCE_LIBRARIES), "git_commit": git_commit(), "git_dirty": git_dirty()}


@cache
def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class StoredCell:
    key: str
    preset: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    git_commit: str
    seed: int | None
    versions: dict[str, str]
    seconds: float | None
    created_at: str


def _set_up(connection: sqlite3.Connection) -> None:
    """WAL mode and the schema. Two processes opening a new store at once can meet "database is
    locked" here without SQLite's busy handler waiting (measured: 3 of 40 paired opens), so this
    step retries for as long as a write would wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            if not _is_current(connection):  # read without a lock: opening a current store takes none
                _lay_out(connection)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _layout_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def _is_current(connection: sqlite3.Connection) -> bool:
    """This code's layout version and every table of `_SCHEMA` (data_contents came after version 2)."""
    return _layout_version(connection) == SCHEMA_VERSION and set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA)) <= _tables(connection)


def _lay_out(connection: sqlite3.Connection) -> None:
    """Create or migrate the layout in one write transaction (a store is laid out whole or not at all)
    that holds nothing slow: every process opening a new store waits on that lock, and importing the
    purifiers (torch) inside it made the last of 4 processes pass the busy timeout. The layout is read
    again under the lock, so only the first process lays the store out."""
    stored_cells = "cells" in _tables(connection) and connection.execute("SELECT 1 FROM cells LIMIT 1").fetchone() is not None
    # The version is read after the cells: cells this code stored were stored after their store was laid out.
    if stored_cells and _layout_version(connection) < 2:
        importlib.import_module("core.purifiers")  # what `_count_spent_draws` reads, imported before the lock
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        if _is_current(connection):
            return
        version = _layout_version(connection)
        for statement in filter(str.strip, _SCHEMA.split(";")):  # not executescript, which would commit first
            connection.execute(statement)
        if version < 2:
            _count_spent_draws(connection)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _count_spent_draws(connection: sqlite3.Connection) -> None:
    """Layout 2. Budgets stored before it multiplied a deterministic purifier's gradient count by the
    EOT of the threat (160 for white-box PGD-20 at EOT 8 through a blur), but the defended model draws
    such a purifier once per step (20 spent): count what was spent. Only the budget moves; no result."""
    rows = connection.execute("SELECT key, config, metrics FROM cells").fetchall()
    if not rows:  # a new store: nothing to recount, and no torch to import under the write lock
        return
    from core.purifiers import PURIFIERS  # already imported by `_lay_out`, before the lock, when it saw cells

    for key, config, metrics in rows:
        config, metrics = json.loads(config), json.loads(metrics)
        purifier = config.get("purifier")  # a spec in robust cells, a bare name in some older kinds
        budget, name = metrics.get("budget") or {}, purifier.get("name") if isinstance(purifier, dict) else purifier
        draws = budget.get("threat_eot") or 1
        if draws > 1 and name in PURIFIERS and not PURIFIERS.get(name).stochastic:
            evaluations = budget.get("gradient_evaluations")
            metrics["budget"] = {**budget, "threat_eot": 1, "gradient_evaluations": None if evaluations is None else evaluations // draws}
            connection.execute("UPDATE cells SET metrics = ? WHERE key = ?", (canonical_json(metrics), key))


def _tables(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _check_layout(connection: sqlite3.Connection, path: Path) -> None:
    """Only a PurifyLab store (or an empty file) is opened for writing: another SQLite database given as
    --store would otherwise gain a table and switch to WAL, and a later layout would be written wrongly."""
    tables = _tables(connection)
    if not tables:
        return
    if "cells" not in tables:
        raise PurifyLabError(f"{path} is an SQLite database but not a PurifyLab results store (no 'cells' table); name another --store")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise PurifyLabError(f"the results store {path} has layout version {version}, newer than this PurifyLab's {SCHEMA_VERSION}; update PurifyLab")
    columns = tuple(row[1] for row in connection.execute("PRAGMA table_info(cells)"))
    if columns != COLUMNS:
        raise PurifyLabError(f"the results store {path} has columns {', '.join(columns)}, not PurifyLab's; name another --store")


def check_store_path(path: Path) -> Path:
    """A store path that cannot hold a store is refused in one line before anything is computed (and,
    as --store, before torch is imported): a folder, a file that is no SQLite database, a read-only file
    or folder, a folder under a file. Returns `path`."""
    path = Path(path)
    if path.is_dir():
        raise PurifyLabError(f"the results store {path} is a folder; name a file, e.g. --store {path / 'results.sqlite'}")
    folder = next((parent for parent in path.parents if parent.exists()), Path.cwd())
    if not folder.is_dir():
        raise PurifyLabError(f"the results store {path}: {folder} is a file, not a folder; name another --store")
    try:  # by trying, not os.access: root may "access" a read-only mount or /proc
        with tempfile.TemporaryFile(dir=folder):
            pass
        if path.exists():
            with path.open("r+b"):
                pass
    except OSError as error:
        raise PurifyLabError(f"the results store {path} cannot be written ({error.strerror or error}); name another --store") from None
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as handle:
            if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                raise PurifyLabError(f"the results store {path} is not an SQLite database; name another --store")
    return path


class ResultStore:
    """SQLite store of evaluated cells; safe for several processes writing at once."""

    def __init__(self, path: str | Path):
        self.path = check_store_path(Path(path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _check_layout(self._connection, self.path)
            _set_up(self._connection)
            # A write lock now, not after the first cell's compute: a store locked by another process
            # for longer than the busy timeout is refused before any work is done.
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.execute("ROLLBACK")
        except (OSError, sqlite3.DatabaseError) as error:
            raise PurifyLabError(f"cannot open the results store at {self.path}: {error}") from None

    @contextmanager
    def _reading_or_writing(self) -> Iterator[None]:
        """A store damaged or locked after it was opened is one line that names it, not a traceback."""
        try:
            yield
        except sqlite3.DatabaseError as error:
            raise PurifyLabError(f"the results store at {self.path} failed: {error}") from None

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, cell_config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored metrics of this exact cell, or None if it was never computed."""
        key = cell_key(cell_config)
        with self._reading_or_writing():
            row = self._connection.execute("SELECT metrics FROM cells WHERE key = ?", (key,)).fetchone()
        return self._stored_object(key, "metrics", row[0]) if row else None

    def _stored_object(self, key: str, column: str, text: Any) -> dict[str, Any]:
        """One JSON column of a stored row. A damaged row (hand-edited, half copied) is one line naming it
        and the store, not a JSONDecodeError traceback; it is left in place for its owner to delete."""
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as error:
            problem = f"is not readable JSON ({error})"
        else:
            if isinstance(value, dict):
                return value
            problem = f"is JSON but not an object (a {type(value).__name__})"
        where = f"cell {key} in the results store {self.path}"
        raise PurifyLabError(f"{where}: its {column} column {problem}; delete that row to recompute it, or name another --store")

    def put(self, cell_config: Mapping[str, Any], metrics: Mapping[str, Any], seconds: float | None = None) -> str:
        """Store (or replace) one cell atomically; returns its key."""
        config_json, metrics_json = canonical_json(keyed_config(cell_config)), canonical_json(metrics)
        key = hashlib.sha256(config_json.encode()).hexdigest()
        seed = cell_config.get("seed")
        row = (
            key,
            cell_config.get("preset"),
            config_json,
            metrics_json,
            git_commit(),
            int(seed) if isinstance(seed, int) else None,
            canonical_json(library_versions()),
            seconds,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
        connection = self._connection
        with self._reading_or_writing():
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return key

    def check_data_contents(self, names_hash: str, content: str, location: str) -> None:
        """Cells name their data by its file names (`data_hash`), so that a copy of a data set
        elsewhere reuses them; a data set with the same names and other files would reuse them too.
        The first data seen under a names hash is recorded by its content (`content_hash`); other
        content under the same names is refused, before any cell of it is reused or computed."""
        connection = self._connection
        with self._reading_or_writing():
            row = connection.execute("SELECT content, location FROM data_contents WHERE names = ?", (names_hash,)).fetchone()
            if row is None:
                created = datetime.now(UTC).isoformat(timespec="seconds")
                connection.execute("INSERT OR IGNORE INTO data_contents VALUES (?, ?, ?, ?)", (names_hash, content, location, created))
                return
        if row[0] != content:
            raise PurifyLabError(
                f"the results store {self.path} holds cells of data with the file names of {location} but other file contents "
                f"(first seen at {row[1]}); its numbers are not this data's: name another --store"
            )

    def cells(self, preset: str | None = None) -> list[StoredCell]:
        """Every stored cell (of one preset if given), oldest first."""
        query = "SELECT * FROM cells"
        params: tuple = ()
        if preset is not None:
            query, params = query + " WHERE preset = ?", (preset,)
        with self._reading_or_writing():
            rows = self._connection.execute(query + " ORDER BY created_at, rowid", params).fetchall()
        return [
            StoredCell(
                key=row[0],
                preset=row[1],
                config=self._stored_object(row[0], "config", row[2]),
                metrics=self._stored_object(row[0], "metrics", row[3]),
                git_commit=row[4],
                seed=row[5],
                versions=self._stored_object(row[0], "versions", row[6]),
                seconds=row[7],
                created_at=row[8],
            )
            for row in rows
        ]

    def integrity_ok(self) -> bool:
        return self._connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@dataclass(frozen=True)
class CellRun:
    """Metrics in the order of the cells given, and which of them were computed rather than reused."""

    metrics: list[dict[str, Any]]
    computed: list[str]
    reused: list[str]


def run_cells(
    cells: Iterable[Mapping[str, Any]],
    compute_fn: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    store: ResultStore,
    progress: bool = True,
    on_cell: Callable[[int, int], None] | None = None,
) -> CellRun:
    """Compute every cell not yet in `store`, storing each as soon as it finishes (so a killed run
    loses at most the cell in flight), and return all metrics, stored or fresh.

    `on_cell(done, total)` is called after each cell: how a UI draws its own progress bar."""
    cells = list(cells)
    metrics, computed, reused = [], [], []
    for done, cell in enumerate(tqdm(cells, desc="cells", unit="cell", disable=not progress), start=1):
        if on_cell is not None and done > 1:
            on_cell(done - 1, len(cells))
        key = cell_key(cell)
        stored = store.get(cell)
        if stored is not None:
            metrics.append(stored)
            reused.append(key)
            continue
        start = time.perf_counter()
        fresh = dict(compute_fn(cell))
        store.put(cell, fresh, seconds=time.perf_counter() - start)
        # Read back what was stored, so fresh and cached runs return identical values (JSON round trip).
        metrics.append(json.loads(canonical_json(fresh)))
        computed.append(key)
    if on_cell is not None and cells:
        on_cell(len(cells), len(cells))
    return CellRun(metrics=metrics, computed=computed, reused=reused)
