"""The SQLite results store: keys, provenance, concurrent writers, resume after SIGKILL, determinism."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.errors import PurifyLabError
from core.results import SCHEMA_VERSION, ResultStore, canonical_json, cell_key, run_cells

REPO_ROOT = Path(__file__).resolve().parents[1]


def _cell(index: int, preset: str = "demo") -> dict:
    return {"preset": preset, "index": index, "attack": {"name": "pgd", "eps": 0.03}, "seed": 0, "classifier_sha256": "ab" * 32}


def test_put_get_roundtrip_records_provenance(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.db") as store:
        assert store.get(_cell(0)) is None
        key = store.put(_cell(0), {"accuracy": 0.75, "n": 48}, seconds=1.5)
        reordered = dict(reversed(list(_cell(0).items())))
        assert store.get(reordered) == {"accuracy": 0.75, "n": 48}
        assert key == cell_key(reordered) and len(key) == 64
        store.put(_cell(1, preset="other"), {"accuracy": 0.5})
        (row,) = store.cells("demo")
        assert row.config == _cell(0) and row.seed == 0 and row.seconds == 1.5
        assert set(row.versions) == {"torch", "timm", "diffusers", "torchattacks"}
        assert row.git_commit == "unknown" or len(row.git_commit) == 40
        assert row.created_at.startswith("20")
        assert len(store.cells()) == 2
        store.put(_cell(0), {"accuracy": 0.8, "n": 48})
        assert store.get(_cell(0))["accuracy"] == 0.8 and len(store.cells()) == 2
        mode = store._connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_keys_change_with_any_config_value_and_bad_values_are_refused(tmp_path: Path) -> None:
    other_weights = {**_cell(0), "classifier_sha256": "cd" * 32}
    assert cell_key(_cell(0)) != cell_key(other_weights)
    assert canonical_json({"b": 1, "a": (1, 2)}) == '{"a":[1,2],"b":1}'
    with ResultStore(tmp_path / "results.db") as store:
        with pytest.raises(PurifyLabError, match="finite"):
            store.put(_cell(0), {"accuracy": float("nan")})
        with pytest.raises(PurifyLabError, match="cannot be stored as JSON"):
            store.put(_cell(0), {"model": object()})
        assert store.cells() == []


_WRITER = """
import sys, time
from pathlib import Path
from core.results import ResultStore
path, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
with ResultStore(path) as store:
    while not go.exists():
        time.sleep(0.01)
    for index in range(50):
        store.put({"worker": worker, "index": index}, {"value": worker * 1000 + index})
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    # Plain interpreters, not multiprocessing's spawn: spawn re-imports the parent's __main__, which
    # after an AppTest can be the app itself (its warm-up thread then aborts the child at exit).
    path, go = str(tmp_path / "results.db"), tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", _WRITER, path, str(worker), str(go)]) for worker in (1, 2)]
    go.touch()  # both open the store first, then write at once
    for process in workers:
        assert process.wait(timeout=120) == 0
    with ResultStore(path) as store:
        stored = {(cell.config["worker"], cell.config["index"]): cell.metrics["value"] for cell in store.cells()}
        assert store.integrity_ok()
    assert stored == {(w, i): w * 1000 + i for w in (1, 2) for i in range(50)}


_SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from core.results import ResultStore, run_cells

    def compute(cell):
        time.sleep(0.2)
        return {{"square": cell["index"] ** 2}}

    run_cells([{{"index": i}} for i in range(20)], compute, ResultStore({path!r}), progress=False)
    """
)


def test_a_killed_run_resumes_without_redoing_finished_cells(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    script = tmp_path / "slow_run.py"
    script.write_text(_SLOW_RUN.format(root=str(REPO_ROOT), path=str(path)))
    process = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            if path.exists():
                with sqlite3.connect(path, timeout=30) as probe:
                    try:
                        done = probe.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
                    except sqlite3.OperationalError:  # table not created yet
                        done = 0
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    with ResultStore(path) as store:
        finished_before = {cell.key for cell in store.cells()}
        assert 4 <= len(finished_before) < 20
        computed_now: list[int] = []

        def compute(cell):
            computed_now.append(cell["index"])
            return {"square": cell["index"] ** 2}

        run = run_cells([{"index": i} for i in range(20)], compute, store, progress=False)
        assert set(run.reused) == finished_before
        assert len(computed_now) == 20 - len(finished_before)
        assert run.metrics == [{"square": i**2} for i in range(20)]
        assert store.integrity_ok() and len(store.cells()) == 20


def _attack_a_tiny_model(cell) -> dict:
    """A real seeded computation: train a small classifier on PneumoniaMNIST, attack it with PGD."""
    import numpy as np
    import torch

    from core.attacks import AttackConfig, create_attack

    data = np.load(Path(cell["data"]) / "pneumoniamnist_28" / "pneumoniamnist.npz")
    images = torch.from_numpy(data["train_images"][:288]).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(data["train_labels"][:288, 0]).long()
    torch.manual_seed(cell["seed"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(images[:256]), labels[:256])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test_x, test_y = images[256:], labels[256:]
    adversarial = create_attack(model, AttackConfig(name="pgd", eps=cell["eps"], steps=5, seed=cell["seed"]))(test_x, test_y)
    with torch.no_grad():
        return {
            "clean_accuracy": (model(test_x).argmax(1) == test_y).float().mean().item(),
            "robust_accuracy": (model(adversarial).argmax(1) == test_y).float().mean().item(),
            "mean_logit": model(adversarial).mean().item(),
        }


def test_same_seed_gives_identical_stored_metrics(tmp_path: Path, shared_data: Path) -> None:
    import torch

    cells = [{"data": str(shared_data), "seed": 3, "eps": eps} for eps in (0.01, 0.05)]
    runs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is several times faster
    try:
        for name in ("first.db", "second.db"):
            with ResultStore(tmp_path / name) as store:
                run_cells(cells, _attack_a_tiny_model, store, progress=False)
                runs.append([(cell.key, canonical_json(cell.metrics)) for cell in store.cells()])
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1]
    small_eps, large_eps = (store_metrics for _, store_metrics in runs[0])
    assert small_eps != large_eps, "different budgets must give different numbers"


def test_run_cells_reports_progress_after_every_cell(tmp_path):
    from core.results import ResultStore, run_cells

    seen = []
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_cells([{"i": i} for i in range(3)], lambda cell: {"v": cell["i"]}, store, progress=False, on_cell=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_only_a_purifylab_store_is_opened_and_a_damaged_one_is_one_line(tmp_path: Path) -> None:
    """Another SQLite database given as --store gained a table and switched to WAL; a store of a later
    layout would be written wrongly; a damaged page was a traceback after the compute."""
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
    before = foreign.read_bytes()
    with pytest.raises(PurifyLabError, match="not a PurifyLab results store"):
        ResultStore(foreign)
    assert foreign.read_bytes() == before

    newer = tmp_path / "newer.sqlite"
    with ResultStore(newer) as store:
        store.put(_cell(0), {"accuracy": 0.5})
    with sqlite3.connect(newer) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(PurifyLabError, match="layout version 99, newer"):
        ResultStore(newer)

    damaged = tmp_path / "damaged.sqlite"
    with ResultStore(damaged) as store:
        for index in range(200):
            store.put(_cell(index), {"accuracy": 0.5, "padding": "x" * 400})
    with sqlite3.connect(damaged) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8192] = b"\xff" * 8192  # pages of the cells table, past the schema
    damaged.write_bytes(bytes(data))
    with pytest.raises(PurifyLabError, match=f"results store at {damaged}.*malformed"):
        with ResultStore(damaged) as store:
            store.cells()


def test_a_layout_1_store_counts_the_draws_a_deterministic_purifier_never_made(tmp_path):
    """White-box PGD-20 at EOT 8 through a blur was stored as 160 gradient evaluations; the defended model
    draws a deterministic purifier once per step, so 20 were spent. A stochastic purifier's 160 stay."""
    path = tmp_path / "old.sqlite"
    budget = {"steps": 20, "threat_eot": 8, "gradient_evaluations": 160}
    cells = {name: {**_cell(index), "purifier": {"name": name, "params": {}}} for index, name in enumerate(("blur", "one_shot"))}
    with ResultStore(path) as store:
        keys = {name: store.put(cell, {"accuracy": 0.5, "budget": budget}) for name, cell in cells.items()}
        store.put({**_cell(2), "purifier": "blur"}, {"accuracy": 0.5})  # older kinds name the purifier bare
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 1")
    with ResultStore(path) as store:
        assert store.get(cells["blur"])["budget"] == {"steps": 20, "threat_eot": 1, "gradient_evaluations": 20}
        assert store.get(cells["one_shot"])["budget"] == budget
        assert store.get(cells["blur"])["accuracy"] == 0.5 and cell_key(cells["blur"]) == keys["blur"]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _folder_of(paths: dict[str, list[Path]], root: Path, changed: str | None = None) -> Path:
    """Class folders of real X-rays; `changed` names one file written with other bytes (an inverted image)."""
    from PIL import Image, ImageOps

    for class_name, files in paths.items():
        (root / class_name).mkdir(parents=True)
        for file in files[:4]:
            target = root / class_name / file.name
            if file.name == changed:
                ImageOps.invert(Image.open(file).convert("L")).save(target, format="JPEG")
            else:
                target.write_bytes(file.read_bytes())
    return root


def test_a_store_refuses_other_files_under_names_it_has_seen(xray_paths, tmp_path):
    """Cells name their data by file names, so a copy elsewhere reuses them; the same names over other
    images once reused the first folder's numbers (an audit's 100 % over a set that reads 75 %)."""
    from core.data.loading import content_hash
    from core.tables import preset_from_dict, run_preset

    first = _folder_of(xray_paths, tmp_path / "first")
    copy = _folder_of(xray_paths, tmp_path / "copy")
    changed = _folder_of(xray_paths, tmp_path / "changed", changed=xray_paths["NORMAL"][0].name)
    assert content_hash(first) == content_hash(copy) != content_hash(changed)
    raw = {
        "title": "contents", "data": str(first), "split": "all", "seed": 0, "batch_size": 8,
        "tables": [{"name": "clean", "caption": "Clean.", "classifiers": [{"name": "student_cnn"}],
                    "rows": [{"label": "Clean"}], "columns": [{"label": "Original"}]}],
        "sanity": {"collapse_eps": [0.3], "collapse_steps": 1},
    }  # fmt: skip
    store = tmp_path / "store.sqlite"
    assert run_preset(preset_from_dict(raw, "contents"), store, tmp_path / "out1", progress=False).computed
    outcome = run_preset(preset_from_dict({**raw, "data": str(copy)}, "contents"), store, tmp_path / "out2", progress=False)
    assert not outcome.computed and outcome.reused  # the same files elsewhere: every cell reused
    with pytest.raises(PurifyLabError, match="other file contents.*name another --store"):
        run_preset(preset_from_dict({**raw, "data": str(changed)}, "contents"), store, tmp_path / "out3", progress=False)
    assert not (tmp_path / "out3").exists()


_OPENER = """
import sys, time
from pathlib import Path
from core.results import ResultStore
path, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
with ResultStore(path) as store:
    store.put({"worker": worker}, {"value": worker})
print(sorted(name for name in ("core.purifiers", "torch") if name in sys.modules))
"""


def test_several_processes_open_one_new_store_at_once_and_none_waits_on_torch(tmp_path: Path) -> None:
    """Each of 4 processes opening a new store ran the layout migration, importing torch while holding
    the write lock, and the last one passed the busy timeout ("database is locked", 1 trial in 60)."""
    path, go = str(tmp_path / "new.sqlite"), tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", _OPENER, path, str(worker), str(go)], stdout=subprocess.PIPE, text=True) for worker in range(4)]
    go.touch()  # all four open the new store at once
    outputs = [process.communicate(timeout=120)[0] for process in workers]
    assert [process.returncode for process in workers] == [0] * 4
    assert [output.strip() for output in outputs] == ["[]"] * 4  # nothing heavy is imported to lay out a new store
    with ResultStore(path) as store:
        assert sorted(cell.metrics["value"] for cell in store.cells()) == [0, 1, 2, 3] and store.integrity_ok()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_path_that_cannot_hold_a_store_is_refused_in_one_line(tmp_path: Path) -> None:
    """A store under a file said "[Errno 17] File exists"."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notes.txt").write_text("my notes")
    cases = {
        tmp_path / "afile" / "results.sqlite": f"the results store {tmp_path / 'afile' / 'results.sqlite'}: {tmp_path / 'afile'} is a file, not a folder",
        tmp_path / "afile" / "sub" / "results.sqlite": f"results.sqlite: {tmp_path / 'afile'} is a file, not a folder",
        tmp_path: f"the results store {tmp_path} is a folder; name a file",
        tmp_path / "notes.txt": f"the results store {tmp_path / 'notes.txt'} is not an SQLite database",
    }
    for path, message in cases.items():
        with pytest.raises(PurifyLabError) as refusal:
            ResultStore(path)
        assert message in str(refusal.value) and "--store" in str(refusal.value), refusal.value
    assert (tmp_path / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize(("metrics", "problem"), [("{not json", "is not readable JSON"), ("[1, 2]", "is JSON but not an object")])
def test_a_damaged_stored_cell_is_one_line_naming_it_and_is_kept(tmp_path: Path, metrics: str, problem: str) -> None:
    """A row whose metrics were hand-edited to bad JSON gave a JSONDecodeError traceback from `get` and
    `cells`; it is refused in one line naming the cell and the store, and the row stays for its owner."""
    path = tmp_path / "results.db"
    with ResultStore(path) as store:
        key = store.put(_cell(0), {"accuracy": 0.75, "n": 48})
        store.put(_cell(1), {"accuracy": 0.5, "n": 48})
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE cells SET metrics = ? WHERE key = ?", (metrics, key))
    message = f"^cell {key} in the results store {re.escape(str(path))}: its metrics column {problem}.*; delete that row to recompute it, or name another"
    with ResultStore(path) as store:
        for read in (lambda: store.get(_cell(0)), store.cells, lambda: run_cells([_cell(1), _cell(0)], _fail_if_computed, store, progress=False)):
            with pytest.raises(PurifyLabError, match=message) as refused:
                read()
            assert "\n" not in str(refused.value)
        assert store.get(_cell(1)) == {"accuracy": 0.5, "n": 48}
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT metrics FROM cells WHERE key = ?", (key,)).fetchone() == (metrics,)
        assert connection.execute("SELECT COUNT(*) FROM cells").fetchone() == (2,)


def _fail_if_computed(cell) -> dict:
    raise AssertionError(f"stored cell {cell} was recomputed")
