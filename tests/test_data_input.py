"""Data sets as users bring them: odd files, layouts, labels and groups, each refused in one line or read as an upload is."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from core.data.describe import DatasetSummary, describe
from core.data.groups import group_images
from core.data.loading import load_split
from core.data.sources import data_listing, load_dataset
from core.data.warning import DataWarning, print_data_warnings_on_one_line
from core.errors import PurifyLabError
from core.image_file import decode_image
from core.paths import REPO_ROOT


def _gradient(height: int = 24, width: int = 32) -> np.ndarray:
    """A picture whose orientation shows: dark on the left, bright on the right, a dark top row."""
    pixels = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    pixels[0] = 0
    return pixels


def _folder_of(tmp_path: Path, files: dict[str, Image.Image]) -> Path:
    """A class folder A holding `files`, and a class folder B with one plain grey PNG."""
    root = tmp_path / "data"
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    for name, image in files.items():
        image.save(root / "A" / name)
    Image.fromarray(_gradient()).save(root / "B" / "plain.png")
    return root


def _python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, **env}, check=True)
    return done.stdout.strip()


# --- a data set is read exactly as the same file uploaded on its own ------------------------


def test_data_set_pixels_are_the_upload_pixels(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways, shown rotated
    rgba = np.dstack([np.stack([_gradient()] * 3, axis=-1), np.full((24, 32), 128, np.uint8)])
    la = np.dstack([_gradient(), np.zeros((24, 32), np.uint8)])
    files = {
        "exif6.jpg": Image.fromarray(_gradient()),
        "rgba_half.png": Image.fromarray(rgba, mode="RGBA"),
        "la_clear.png": Image.fromarray(la, mode="LA"),
        "float.tif": Image.fromarray(np.linspace(0.0, 4.0, 24 * 32, dtype=np.float32).reshape(24, 32), mode="F"),
    }
    for name, image in files.items():
        one = tmp_path / name
        image.save(one, **({"exif": exif, "quality": 95} if name == "exif6.jpg" else {}))
        upload = decode_image(one).pixels
        data_set = _single(tmp_path / f"set_{name}", one)
        assert data_set.shape == upload.shape, name  # EXIF rotation applied on both paths
        assert np.abs(data_set - upload).max() <= 0.5 / 255 + 1e-6, name  # the same pixels, up to 8-bit storage


def _single(root: Path, image: Path) -> np.ndarray:
    """`image` read through the data-set loader, as float (H, W) in [0, 1]."""
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    (root / "A" / image.name).write_bytes(image.read_bytes())
    (root / "B" / image.name).write_bytes(image.read_bytes())
    return load_dataset(root, channels=1).images[0, 0].numpy().astype(np.float32) / 255


def test_colour_kept_for_three_channels_is_flattened_on_black_like_the_upload(tmp_path: Path) -> None:
    colour = np.zeros((20, 20, 4), np.uint8)
    colour[..., 0], colour[..., 3] = 200, 128
    path = tmp_path / "one.png"
    Image.fromarray(colour, mode="RGBA").save(path)
    rgb = _single(tmp_path / "grey", path)  # the luminance the upload path reads
    assert np.abs(rgb - decode_image(path).pixels).max() <= 0.5 / 255 + 1e-6
    kept = load_dataset(tmp_path / "grey", channels=3).images[0].numpy()
    assert kept.shape == (3, 20, 20) and kept[0].max() == round(200 * 128 / 255) and kept[1].max() == 0


# --- 16-bit files that hold 12-bit values ----------------------------------------------------


def test_sixteen_bit_png_with_twelve_bit_values_says_so(tmp_path: Path) -> None:
    path = tmp_path / "raw12.png"
    Image.fromarray(np.tile(np.linspace(0, 4095, 32).astype(np.uint16), (32, 1))).save(path)
    notes = " ".join(decode_image(path).notes)
    assert "12 bits" in notes and "4095" in notes
    full = tmp_path / "full.png"
    Image.fromarray(np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))).save(full)
    assert decode_image(full).notes == ("16-bit rescaled",)


# --- nothing left out of a listing without a word --------------------------------------


def test_images_in_sub_folders_of_class_folders_are_refused_with_their_count(tmp_path: Path) -> None:
    for relative in ("A/a0.png", "A/deeper/a1.png", "B/deeper/b0.png", "B/deeper/b1.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_gradient()).save(tmp_path / relative)
    with pytest.raises(PurifyLabError, match=r"holds 3 image\(s\) in sub-folders of its class folders \(e.g. A/deeper/a1.png\)"):
        data_listing(tmp_path)


def test_tar_mixing_class_and_split_members_is_refused(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.fromarray(_gradient()).save(png, format="PNG")
    archive = tmp_path / "mixed.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("A/1.png", "B/2.png", "train/A/3.png", "train/B/4.png"):
            member = tarfile.TarInfo(name)
            member.size = len(png.getvalue())
            tar.addfile(member, io.BytesIO(png.getvalue()))
    with pytest.raises(PurifyLabError, match=r"mixes 2 CLASS/IMAGE member\(s\) \(e.g. A/1.png\) with SPLIT/CLASS/IMAGE ones \(train\)"):
        data_listing(archive)


def test_broken_links_count_as_undecodable(tmp_path: Path) -> None:
    root = _folder_of(tmp_path, {"good.png": Image.fromarray(_gradient())})
    (root / "A" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "A" / "loop.png").symlink_to(root / "A" / "loop.png")
    summary = describe(root)
    assert sorted(source for source, _ in summary.undecodable) == ["A/gone.png", "A/loop.png"]
    with pytest.warns(DataWarning, match=r"skipped 2 undecodable file\(s\)"):
        assert load_dataset(root, cache_dir=tmp_path / "cache").sources == ("A/good.png", "B/plain.png")


def test_skipped_files_are_warned_on_one_line_on_every_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder_of(tmp_path, {"good.png": Image.fromarray(_gradient())})
    (root / "A" / "empty.png").write_bytes(b"")
    cache = tmp_path / "cache"
    for _ in range(2):  # the second run is served from the cache
        with pytest.warns(DataWarning, match=r"skipped 1 undecodable file\(s\) .* e.g. A/empty.png"):
            load_dataset(root, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1
    # and a figure's record says so (evaluate's JSON "data" is this description)
    monkeypatch.setattr("core.data.loading.CACHE_DIR", cache)
    with pytest.warns(DataWarning):
        described = load_split(root, "all", 16).describe(root)
    assert described["undecodable_skipped"] == 1 and described["n"] == 2
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    print_data_warnings_on_one_line()  # what the CLI's entry point does
    assert warnings.formatwarning("no patient ids", DataWarning, "core/data/groups.py", 70) == "warning: no patient ids\n"


# --- labels of a .npz --------------------------------------------------------------------


def _npz(path: Path, labels: np.ndarray) -> Path:
    np.savez(path, train_images=np.zeros((len(labels), 28, 28), np.uint8), train_labels=labels)
    return path


def test_npz_float_labels_and_gaps_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PurifyLabError, match="labels dtype is float64; expected integer class indices"):
        data_listing(_npz(tmp_path / "float.npz", np.array([0.0, 1.5, 0.0, 1.0])))
    with pytest.raises(PurifyLabError, match="labels run to 3 but no image has class 2"):
        data_listing(_npz(tmp_path / "gap.npz", np.array([0, 1, 3, 0])))


def test_npz_absurd_label_is_refused_at_once(tmp_path: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(PurifyLabError, match="has label 1000000; more than 1000 classes"):
        describe(_npz(tmp_path / "huge.npz", np.array([0, 1, 0, 1_000_000])))
    assert time.perf_counter() - started < 1.0


def test_summary_table_is_linear_in_the_classes() -> None:
    classes = tuple(str(i) for i in range(20_000))
    summary = DatasetSummary("x", "MedMNIST npz", classes, dict.fromkeys(classes, 1), (), 0, None, None, {}, 1, (), 0, ())
    started = time.perf_counter()
    assert summary.table().count("\n") == 20_004
    assert time.perf_counter() - started < 1.0  # was quadratic: seconds at this size


# --- groups.csv ------------------------------------------------------------------------------


def _groups(root: Path, rows: list[tuple[str, str]], encoding: str = "utf-8") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "groups.csv", "w", newline="", encoding=encoding) as handle:
        csv.writer(handle).writerows([("path", "group"), *rows])
    return root


def test_groups_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    root = _groups(tmp_path / "bom", [("A/1.png", "p1"), ("B/2.png", "p2")], encoding="utf-8-sig")
    assert group_images(["A/1.png", "B/2.png"], root).ids == ("p1", "p2")


def test_groups_file_with_blank_or_conflicting_groups_is_refused(tmp_path: Path) -> None:
    blank = _groups(tmp_path / "blank", [("A/1.png", "p1"), ("B/2.png", " ")])
    with pytest.raises(PurifyLabError, match="line 3: B/2.png has an empty group"):
        group_images(["A/1.png", "B/2.png"], blank)
    twice = _groups(tmp_path / "twice", [("A/1.png", "p1"), ("B/2.png", "p2"), ("A/1.png", "other")])
    with pytest.raises(PurifyLabError, match=r"line 4: A/1.png is listed with two groups \(p1, other\)"):
        group_images(["A/1.png", "B/2.png"], twice)


# --- an unreadable --data is refused before a model is built ---------------------------


def test_unreadable_data_is_named_for_what_it_is(tmp_path: Path) -> None:
    one = tmp_path / "one.png"
    Image.fromarray(_gradient()).save(one)
    with pytest.raises(PurifyLabError, match="is one image; --data takes a folder or data file.*for one image use attack or purify"):
        data_listing(one)
    for name in ("A", "B"):
        (tmp_path / "dicom" / name).mkdir(parents=True)
        (tmp_path / "dicom" / name / "x.dcm").write_bytes(b"\0" * 132)
    with pytest.raises(PurifyLabError, match="holds DICOM files .* data sets are read from PNG, JPEG.* DICOM files one at a time"):
        data_listing(tmp_path / "dicom")
    np.savez(tmp_path / "keys.npz", pictures=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(PurifyLabError, match="no <split>_images / <split>_labels arrays"):
        data_listing(tmp_path / "keys.npz")
    (tmp_path / "text.npz").write_text("train_images,train_labels\n" * 40)
    with pytest.raises(PurifyLabError, match="only plain arrays are read, never pickles") as refused:
        data_listing(tmp_path / "text.npz")
    assert "unsafely" not in str(refused.value)


def test_listing_imports_no_torch() -> None:
    assert _python("import sys, core.data.sources; print('torch' in sys.modules)") == "False"


def test_evaluate_refuses_bad_data_before_building_the_model_and_classes_before_decoding(tmp_path: Path) -> None:
    from core.evaluate import EvaluationConfig, evaluate
    from core.models import create_classifier

    one = tmp_path / "one.png"
    Image.fromarray(_gradient()).save(one)
    with pytest.raises(PurifyLabError, match="is one image"):  # not "classifier 'no_such_model' is unknown"
        evaluate(EvaluationConfig(data=str(one), classifier="no_such_model", split="all"))
    for name in ("x", "y", "z"):
        (tmp_path / "three" / name).mkdir(parents=True)
        (tmp_path / "three" / name / "broken.png").write_bytes(b"not a png")  # decoding would fail first
    model = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8))
    with pytest.raises(PurifyLabError, match=r"answers 2 classes, but --data .* has 3 \(x, y, z\)"):
        evaluate(EvaluationConfig(data=str(tmp_path / "three"), classifier="student_cnn", split="all"), model=model)


def test_sweep_refuses_one_class_data_before_any_compute(tmp_path: Path) -> None:
    from core.sweeps import sweep_preset

    (tmp_path / "only").mkdir()
    Image.fromarray(_gradient()).save(tmp_path / "only" / "a.png")
    with pytest.raises(PurifyLabError, match=r"holds one class \(only\)"):
        sweep_preset("tstar", "noise", (0.01,), classifier="student_cnn", data=tmp_path, split="all")


# --- the decode cache can be moved ------------------------------------------------------------


def test_cache_folder_follows_purifylab_cache(tmp_path: Path) -> None:
    code = "from core.paths import CACHE_DIR; from core.data import loading; print(CACHE_DIR, loading.CACHE_DIR)"
    assert _python(code, PURIFYLAB_CACHE=str(tmp_path)) == f"{tmp_path} {tmp_path}"


# --- damaged, linked, foreign and unreadable files in a data set --------------------------------


def _png_bytes(shift: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.roll(_gradient(), shift, axis=1)).save(buffer, format="PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def test_tar_with_a_damaged_header_partway_is_refused_not_cut_short(tmp_path: Path) -> None:
    plain = tmp_path / "six.tar"
    with tarfile.open(plain, "w") as tar:
        for index, name in enumerate(("A/0.png", "A/1.png", "A/2.png", "B/0.png", "B/1.png", "B/2.png")):
            _add(tar, name, _png_bytes(index))
    with tarfile.open(plain) as tar:
        fifth = tar.getmembers()[4].offset
    assert len(data_listing(plain).items) == 6
    damaged = bytearray(plain.read_bytes())
    damaged[fifth : fifth + 5] = b"\xff" * 5  # the name field of member 5's header: its checksum no longer holds
    for name, content in (("cut.tar", bytes(damaged)), ("cut.tar.gz", gzip.compress(bytes(damaged), mtime=0))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(PurifyLabError, match=rf"tar archive .*{name} is corrupt after member 4: the next header is damaged"):
            data_listing(tmp_path / name)


def test_tar_link_members_are_named_not_dropped_without_a_word(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("A/0.png", "B/0.png"):
            _add(tar, name, _png_bytes())
        for name, kind, target in (("A/hard.png", tarfile.LNKTYPE, "A/0.png"), ("B/soft.png", tarfile.SYMTYPE, "0.png")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, target
            tar.addfile(link)
    with pytest.warns(DataWarning, match=r"2 link member\(s\) not read \(e.g. A/hard.png\).*--dereference --hard-dereference"):
        listing = data_listing(archive)
    assert [item.source for item in listing.items] == ["links.tar.gz:A/0.png", "links.tar.gz:B/0.png"]  # names hash kept


def test_images_in_formats_uploads_read_are_named_when_a_data_set_leaves_them_out(tmp_path: Path) -> None:
    root = _folder_of(tmp_path, {"a.png": Image.fromarray(_gradient()), "b.gif": Image.fromarray(_gradient())})
    (root / "B" / "scan.dcm").write_bytes(b"\0" * 132)
    with pytest.warns(DataWarning, match=r"2 file\(s\) in the class folders of .* not read \(e.g. A/b.gif\): data sets are read from PNG"):
        listing = data_listing(root)
    assert [item.source for item in listing.items] == ["A/a.png", "B/plain.png"]  # names hash kept


def test_non_utf8_file_names_load_cache_and_hash(tmp_path: Path) -> None:
    from core.data.splits import _hash_sources, data_hash, data_hash_of_folder

    root = _folder_of(tmp_path, {"a.png": Image.fromarray(_gradient())})
    latin1 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: not UTF-8, decoded by Python with a surrogate
    Image.fromarray(_gradient()).save(root / "A" / latin1, format="PNG")
    for _ in range(2):  # written to the cache, then read from it
        loaded = load_dataset(root, cache_dir=tmp_path / "cache")
        assert f"A/{latin1}" in loaded.sources and data_hash(loaded) == data_hash_of_folder(root)
    assert _hash_sources(["A/a.png", "B/b.png"]) == hashlib.sha256(b"A/a.png\nB/b.png").hexdigest()  # valid names keep their hash


def test_bombs_and_oversized_tar_members_are_skipped_before_decoding(tmp_path: Path) -> None:
    from test_io import png_bomb

    root = _folder_of(tmp_path, {"a.png": Image.fromarray(_gradient())})
    (root / "A" / "over_ours.png").write_bytes(png_bomb(6000, 6000))  # 36 MP: above the upload limit, below Pillow's warning
    (root / "A" / "over_pillow.png").write_bytes(png_bomb(12000, 12000))  # 144 MP: Pillow warns, then decodes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reasons = dict(describe(root).undecodable)
    assert "the limit is 25,000,000" in reasons["A/over_ours.png"] and "exceeds limit" in reasons["A/over_pillow.png"]
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    archive = tmp_path / "big.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        _add(tar, "A/0.png", _png_bytes())
        _add(tar, "B/0.png", _png_bytes())
        _add(tar, "A/huge.png", bytes(50 * 1024 * 1024 + 1))  # read whole, it would sit in memory until decoded
    assert dict(describe(archive).undecodable) == {"big.tar.gz:A/huge.png": "member is 52,428,801 bytes; the limit is 52,428,800"}


def test_damaged_compressed_data_files_are_refused_in_one_line(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 4, (20, 28, 28), dtype=np.uint8)
    idx = bytearray(gzip.compress(b"\0\0\x08\x03" + np.array([20, 28, 28], ">u4").tobytes() + images.tobytes(), mtime=0))
    idx[20:28] = b"\xff" * 8  # inside the deflate stream: zlib's error, not gzip's CRC one
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(idx))
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + np.array([20], ">u4").tobytes() + bytes(20)))
    with pytest.raises(PurifyLabError, match="cannot read idx file .* invalid bit length repeat"):
        data_listing(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, train_images=images, train_labels=np.zeros(20, np.int64))
    npz = bytearray(buffer.getvalue())
    npz[150:158] = b"\xff" * 8
    (tmp_path / "bad.npz").write_bytes(bytes(npz))
    with pytest.raises(PurifyLabError, match="cannot read .*bad.npz as a .npz archive: Error -3 while decompressing"):
        data_listing(tmp_path / "bad.npz")
    (tmp_path / "rank" / "t10k-images-idx3-ubyte").parent.mkdir()
    (tmp_path / "rank" / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\xc8" + bytes(12))
    (tmp_path / "rank" / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + bytes(4))
    with pytest.raises(PurifyLabError, match="header says 200 dimensions but the file ends at byte 16"):
        data_listing(tmp_path / "rank" / "t10k-images-idx3-ubyte")


def test_idx_gzip_is_known_by_its_content_not_its_name(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    (tmp_path / "t10k-images-idx3-ubyte.GZ").write_bytes(gzip.compress(b"\0\0\x08\x03" + np.array([3, 28, 28], ">u4").tobytes() + images.tobytes()))
    (tmp_path / "t10k-labels-idx1-ubyte.GZ").write_bytes(gzip.compress(b"\0\0\x08\x01" + np.array([3], ">u4").tobytes() + bytes([0, 1, 0])))
    loaded = load_dataset(tmp_path / "t10k-images-idx3-ubyte.GZ")
    assert np.array_equal(loaded.images[:, 0].numpy(), images) and loaded.labels.tolist() == [0, 1, 0]


def test_a_cache_folder_that_cannot_be_written_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    root = _folder_of(tmp_path, {"a.png": Image.fromarray(_gradient())})
    (tmp_path / "not_a_folder").write_text("")  # root as well as any user is refused a folder below a file
    with pytest.warns(DataWarning, match="decode cache not written to .*not_a_folder/cache: .*; the next run decodes again"):
        assert len(load_dataset(root, cache_dir=tmp_path / "not_a_folder" / "cache")) == 2


def test_a_link_to_a_pipe_is_skipped_not_waited_on(tmp_path: Path) -> None:
    root = _folder_of(tmp_path, {"a.png": Image.fromarray(_gradient())})
    os.mkfifo(tmp_path / "pipe")
    (root / "A" / "link.png").symlink_to(tmp_path / "pipe")
    code = f"from core.data.describe import describe; print(dict(describe({str(root)!r}).undecodable))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)  # it blocked for good
    assert "'A/link.png': 'not a regular file" in done.stdout, done.stderr[-500:]


# --- file permissions (root reads through them: those tests drop it) ----------------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder another user may enter (pytest's is private to its user)."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)
        for path in Path(folder).rglob("*"):
            path.chmod(0o755)  # so that it can be removed


def _unprivileged(code: str) -> str:
    """Run `code` where file permissions apply: as root, in a user namespace of its own (`unshare
    --user`), where it is nobody."""
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode:
            pytest.skip("running as root, and no user namespace to drop root in")
        command = ["unshare", "--user", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]
    return done.stdout.strip()


def test_a_file_the_system_refused_to_read_is_not_cached_as_skipped(shared_tmp: Path) -> None:
    root = _folder_of(shared_tmp, {"a.png": Image.fromarray(_gradient()), "b.png": Image.fromarray(_gradient())})
    cache = shared_tmp / "cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    code = f"from core.data.sources import load_dataset; print(len(load_dataset({str(root)!r}, cache_dir={str(cache)!r})))"
    (root / "A" / "b.png").chmod(0)
    assert _unprivileged(code) == "2"
    (root / "A" / "b.png").chmod(0o644)  # chmod changes neither size nor mtime
    assert _unprivileged(code) == "3"


def test_an_unreadable_class_folder_is_refused_in_one_line(shared_tmp: Path) -> None:
    root = _folder_of(shared_tmp, {"a.png": Image.fromarray(_gradient())})
    (root / "B").chmod(0)
    code = f"from core.data.sources import data_listing\ntry: data_listing({str(root)!r})\nexcept Exception as error: print(error)"
    assert _unprivileged(code) == f"cannot read {root / 'B'}: Permission denied"


# --- corrupt and hostile inputs refused in one line (audit data_layer 3, 4, 5, 6, 9) -------------


def _overflowing_tiff() -> bytes:
    """A 24 x 24 TIFF whose StripOffsets type byte reads LONG8, plus one changed pixel byte (found by
    fuzzing): Pillow's seek in an in-memory stream raised OverflowError."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 24), dtype=np.uint8)).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    data[72], data[345] = 0x10, 0x46
    return bytes(data)


def test_a_tiff_that_overflows_pillow_is_refused_as_an_upload_and_skipped_in_a_data_set(tmp_path: Path) -> None:
    corrupt = _overflowing_tiff()
    with pytest.raises(PurifyLabError, match=r"could not decode the TIFF image \(truncated or corrupt\)"):
        decode_image(corrupt)
    root = _folder_of(tmp_path, {"a.png": Image.fromarray(_gradient())})
    (root / "A" / "bad.tif").write_bytes(corrupt)
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("A/0.png", _png_bytes()), ("B/0.png", _png_bytes(1)), ("A/bad.tif", corrupt)):
            _add(tar, name, data)
    assert dict(describe(root).undecodable)["A/bad.tif"].startswith("could not decode the TIFF image")
    assert dict(describe(archive).undecodable)["bad.tar.gz:A/bad.tif"].startswith("could not decode the TIFF image")
    with pytest.warns(DataWarning, match=r"skipped 1 undecodable file\(s\) .* e.g. bad.tar.gz:A/bad.tif"):
        assert len(load_dataset(archive)) == 2


def _npz_declaring(path: Path, images_shape: tuple[int, ...], labels_shape: tuple[int, ...]) -> Path:
    """An .npz whose .npy headers declare these shapes, followed by almost no data."""

    def npy(shape: tuple[int, ...], dtype: str) -> bytes:
        buffer = io.BytesIO()
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(buffer, header)
        return buffer.getvalue() + bytes(128)

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_images.npy", npy(images_shape, "uint8"))
        archive.writestr("train_labels.npy", npy(labels_shape, "int64"))
    return path


def test_npz_arrays_declaring_more_than_the_limit_are_refused_before_numpy_allocates_them(tmp_path: Path) -> None:
    bomb = _npz_declaring(tmp_path / "bomb.npz", (1_000_000, 1024, 1024), (2,))  # 977 GiB from a 0.6 kB file
    with pytest.raises(PurifyLabError, match=r"bomb.npz:train_images declares \(1000000, 1024, 1024\) uint8 values, 1,048,576,000,000 bytes"):
        data_listing(bomb)
    labels_bomb = _npz_declaring(tmp_path / "labels.npz", (2, 8, 8), (10**12,))
    with pytest.raises(PurifyLabError, match=r"labels.npz:train_labels declares \(1000000000000,\) int64 values, .* the limit is 4,294,967,296"):
        data_listing(labels_bomb)
    # under the limit, but more than the process may allocate: numpy's MemoryError is refused in one line too
    three_gib = _npz_declaring(tmp_path / "three.npz", (3, 1024, 1024, 1024), (3,))
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))\n"
        "from core.data.sources import data_listing\n"
        f"try: data_listing({str(three_gib)!r})\nexcept Exception as error: print(type(error).__name__, error)"
    )
    assert _python(code).startswith(f"PurifyLabError cannot read {three_gib} as a .npz archive: Unable to allocate 3.00 GiB")


def test_tar_members_with_the_same_name_are_refused_not_dropped(tmp_path: Path) -> None:
    archive = tmp_path / "dup.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for index, name in enumerate(("A/a.png", "A/a.png", "./A/b.png", "A/b.png", "B/c.png")):
            _add(tar, name, _png_bytes(index))
    with pytest.raises(PurifyLabError, match=r"dup.tar.gz holds 2 member name\(s\) more than once \(e.g. A/a.png, 2 times\)"):
        data_listing(archive)


def test_images_beside_the_class_folders_are_named_not_dropped_without_a_word(tmp_path: Path) -> None:
    root = _folder_of(tmp_path, {"a.png": Image.fromarray(_gradient())})
    splits = tmp_path / "splits"
    for split in ("train", "test"):
        shutil.copytree(root, splits / split)
    for stray in (root / "stray1.png", root / "stray2.jpeg", splits / "stray.png"):
        Image.fromarray(_gradient()).save(stray)
    with pytest.warns(DataWarning, match=r"2 image file\(s\) directly in .*data not read \(e.g. stray1.png\): the loader reads \[SPLIT/\]CLASS/IMAGE"):
        listing = data_listing(root)
    assert [item.source for item in listing.items] == ["A/a.png", "B/plain.png"]  # names hash kept
    with pytest.warns(DataWarning, match=r"1 image file\(s\) directly in .*splits not read \(e.g. stray.png\)"):
        assert len(data_listing(splits, "train").items) == 2
    archive = tmp_path / "loose.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("A/0.png", "B/0.png", "loose.png"):
            _add(tar, name, _png_bytes())
    with pytest.warns(DataWarning, match=r"loose.tar: 1 image member\(s\) at the top level not read \(e.g. loose.png\)"):
        assert [item.source for item in data_listing(archive).items] == ["loose.tar:A/0.png", "loose.tar:B/0.png"]


def test_tar_hidden_folders_are_skipped_and_images_nested_in_a_class_folder_are_refused_as_such(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden.tar"
    with tarfile.open(hidden, "w") as tar:
        for name in ("A/0.png", "B/0.png", ".git/A/x.png", "B/.cache/y.png", "__MACOSX/A/._0.png"):
            _add(tar, name, _png_bytes())
    assert [item.source for item in data_listing(hidden).items] == ["hidden.tar:A/0.png", "hidden.tar:B/0.png"]
    nested = tmp_path / "nested.tar"
    with tarfile.open(nested, "w") as tar:
        for name in ("A/0.png", "B/0.png", "A/2019/c.png"):
            _add(tar, name, _png_bytes())
    with pytest.raises(PurifyLabError, match=r"nested.tar holds 1 image\(s\) nested inside class folders \(e.g. A/2019/c.png\)") as refused:
        data_listing(nested)
    assert "split" not in str(refused.value).replace("[SPLIT/]", "")


def test_purify_and_attack_refuse_a_pipe_or_a_link_to_one_before_opening_it(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    (tmp_path / "link.png").symlink_to(pipe)
    for path in (pipe, tmp_path / "link.png"):  # opening either would wait for a writer for ever
        with pytest.raises(PurifyLabError, match=r"^image path is not a regular file \(a pipe, device or socket, or a link to one\)"):
            decode_image(path)


def test_memory_running_out_in_pillow_is_a_one_line_refusal_never_cached_as_a_bad_file() -> None:
    code = """
import io, resource
from functools import partial
from PIL import Image
from core.data.decode import decode
from core.image_file import decode_image
buffer = io.BytesIO()
Image.new("L", (5000, 5000)).save(buffer, format="PNG")  # 25 MP, the pixel limit: 25 MB once decoded
data = buffer.getvalue()
in_use = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (in_use + 4 * 1024**2, in_use + 4 * 1024**2))
try: decode_image(data)
except Exception as error: print(type(error).__name__, error)
decoded = decode(partial(Image.open, io.BytesIO(data)), channels=1, size=None)
print(decoded.error, decoded.unreadable)
"""
    assert _python(code).splitlines() == [
        "PurifyLabError could not decode the PNG image: not enough memory",
        "could not decode the PNG image: not enough memory True",
    ]


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed unsigned-byte idx file (the MNIST format) holding `array`."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + array.tobytes())


def test_a_renamed_copy_of_a_papers_training_file_is_named_as_the_training_images(shared_data: Path, tmp_path: Path) -> None:
    """A renamed copy of the CIFAR-10 tar read 'split all, accuracy 0.875' with no remark: the warning
    looked for a training folder, and MNIST's and CIFAR-10's training data are files; an idx copy
    renames every image too, so only their pixels tell them."""
    from core.data.loading import resolve_split
    from core.data.locations import CIFAR10_FILE, MNIST_FILE
    from core.data.sources import read_idx

    if not (MNIST_FILE.is_file() and CIFAR10_FILE.is_file()):
        pytest.skip(f"MNIST or CIFAR-10 not found under {shared_data}")
    card = {"data": {"data_hash": "0" * 64}}
    images, labels = read_idx(MNIST_FILE)[:20], read_idx(MNIST_FILE.with_name("t10k-labels-idx1-ubyte.gz"))[:20]
    for prefix, pixels in (("copy", images), ("inverted", 255 - images)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", pixels)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    with pytest.warns(DataWarning, match=r"20 of the 20 images of .*copy-images-idx3-ubyte are, pixel for pixel, images of the file mnist_cnn was trained on"):
        assert resolve_split(tmp_path / "copy-images-idx3-ubyte", None, card | {"name": "mnist_cnn"}) == "all"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # other pixels under the same indices are other images
        assert resolve_split(tmp_path / "inverted-images-idx3-ubyte", None, card | {"name": "mnist_cnn"}) == "all"
    renamed, other_export = tmp_path / "other.tar", tmp_path / "export.tar"
    with tarfile.open(CIFAR10_FILE) as source, tarfile.open(renamed, "w") as copy, tarfile.open(other_export, "w") as export:
        members = [member for member in source if member.isfile()][:11]
        contents = [source.extractfile(member).read() for member in members]
        for index, member in enumerate(members[:10]):
            copy.addfile(member, io.BytesIO(contents[index]))
            # CIFAR's names (CLASS/0000.jpg) recur in every export of it: the same names over other pictures
            other = tarfile.TarInfo(member.name)
            other.size = len(contents[index + 1])
            export.addfile(other, io.BytesIO(contents[index + 1]))
    with pytest.warns(DataWarning, match=r"10 of the 10 images of .*other.tar are, by file name and pixels, images of the file cifar10_cnn was trained on"):
        assert resolve_split(renamed, None, card | {"name": "cifar10_cnn"}) == "all"
    damaged = tmp_path / "damaged"  # a truncated twin is no one's twin, and the loader, not this check, reports it
    for index, member in enumerate(members[:4]):
        target = damaged.joinpath(*Path(member.name).parts[-2:])  # CLASS/IMAGE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(contents[index][:40] if index == 0 else contents[index])
    with pytest.warns(DataWarning, match=r"3 of the 4 images of .*damaged are, by file name and pixels"):
        assert resolve_split(damaged, None, card | {"name": "cifar10_cnn"}) == "all"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_split(other_export, None, card | {"name": "cifar10_cnn"}) == "all"


def test_training_images_read_through_a_split_folder_or_read_whole_are_named(xray_train_dir: Path, xray_test_dir: Path, tmp_path: Path) -> None:
    """`--data PARENT --split train`, PARENT/train holding training X-rays, and the training folder
    read with `--split all` or `train` printed figures with no remark, while the same images in a
    plain folder were named as training images."""
    from core.data.loading import resolve_split
    from core.data.splits import data_hash_of_folder

    parent = tmp_path / "parent"
    for split, source in (("train", xray_train_dir), ("test", xray_test_dir)):
        for label in ("NORMAL", "PNEUMONIA"):
            (parent / split / label).mkdir(parents=True)
            for image in sorted((source / label).glob("*.jpeg"))[:2]:
                shutil.copy(image, parent / split / label / image.name)
    card = {"name": "student_cnn", "data": {"data_hash": "0" * 64}}
    with pytest.warns(DataWarning, match=r"4 of the 4 images of .*parent \(split train\) are, by file name, images of the folder student_cnn was trained on"):
        assert resolve_split(parent, "train", card) == "train"
    trained = {"name": "student_cnn", "data": {"data_hash": "0" * 64, "listed_hash": data_hash_of_folder(xray_train_dir)}}
    with pytest.warns(DataWarning, match=r"is the data student_cnn was trained on, and split all, read whole, holds every image the model was trained on"):
        assert resolve_split(xray_train_dir, "all", trained) == "all"
    with pytest.warns(DataWarning, match=r"is the data student_cnn was trained on, and split train is the part of it the model was trained on"):
        assert resolve_split(xray_train_dir, "train", trained) == "train"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the other cohort, and the validation part chosen on by design
        assert resolve_split(parent, "test", card) == "test"
        assert resolve_split(xray_train_dir, None, trained) == "val"
        assert resolve_split(xray_train_dir, "val", trained) == "val"


def test_a_stray_image_in_a_tar_split_folder_is_dropped_with_a_word_as_on_disk(tmp_path: Path) -> None:
    """A tar whose train folder held one thumbnail beside its class folders was refused, every
    correctly placed image named 'nested inside class folders'; the same tree on disk is read
    (`data describe --split train` lists it so)."""
    from core.data.sources import list_items

    names = ("train/A/0.png", "train/B/0.png", "test/A/0.png", "test/B/0.png", "train/thumbnail.png")
    tree = tmp_path / "tree"
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        for name in names:
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_bytes(_png_bytes())
            _add(tar, name, _png_bytes())
    with pytest.warns(DataWarning, match=r"1 image file\(s\) directly in .*train not read \(e.g. thumbnail.png\)"):
        on_disk = list_items(tree, "train")
    with pytest.warns(DataWarning, match=r"tree.tar: 1 image member\(s\) outside the class folders of split train not read \(e.g. train/thumbnail.png\)"):
        in_tar = data_listing(archive, "train")
    assert [item.source for item in in_tar.items] == ["tree.tar:train/A/0.png", "tree.tar:train/B/0.png"]
    assert in_tar.classes == on_disk.classes == ("A", "B")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the split read holds no stray image
        assert len(data_listing(archive, "test").items) == 2
    deeper = tmp_path / "deeper.tar"
    with tarfile.open(deeper, "w") as tar:
        for name in (*names, "train/A/2019/1.png"):
            _add(tar, name, _png_bytes())
    with pytest.raises(PurifyLabError, match=r"deeper.tar holds 1 image\(s\) nested inside class folders \(e.g. train/A/2019/1.png\)"):
        data_listing(deeper, "train")


def test_a_tar_of_class_folders_with_sub_folders_or_under_one_top_folder_reads_as_before(tmp_path: Path) -> None:
    """Reading a stray image as a split folder's misread two layouts: class folders that each hold a
    sub-folder became splits named after the classes (an 'aug' class, the real images dropped), and
    an archive made of one folder (data/test/CLASS/IMAGE) was refused as nested."""
    augmented = tmp_path / "augmented.tar"
    with tarfile.open(augmented, "w") as tar:
        for name in ("NORMAL/a.png", "NORMAL/aug/b.png", "PNEUMONIA/c.png", "PNEUMONIA/aug/d.png"):
            _add(tar, name, _png_bytes())
    with pytest.raises(PurifyLabError, match=r"augmented.tar holds 2 image\(s\) nested inside class folders \(e.g. NORMAL/aug/b.png\)"):
        data_listing(augmented, None)
    one_folder = tmp_path / "one_folder.tar"
    with tarfile.open(one_folder, "w") as tar:
        for name in ("data/test/cat/1.png", "data/test/dog/2.png"):
            _add(tar, name, _png_bytes())
    listing = data_listing(one_folder, None)
    assert listing.classes == ("cat", "dog") and [item.source for item in listing.items] == [
        "one_folder.tar:data/test/cat/1.png",
        "one_folder.tar:data/test/dog/2.png",
    ]
    # `tar czf x.tgz data/` of a folder with a preview image beside its class folders, or above its split folders
    layouts = {"data": ("data/preview.png", "data/A/1.png", "data/B/2.png"), "data/train": ("data/preview.png", "data/train/A/1.png", "data/test/A/2.png")}
    for index, (split, names) in enumerate(layouts.items()):
        archive = tmp_path / f"preview{index}.tar"
        with tarfile.open(archive, "w") as tar:
            for name in names:
                _add(tar, name, _png_bytes())
        with pytest.warns(DataWarning, match=rf"1 image member\(s\) outside the class folders of split {split} not read \(e.g. data/preview.png\)"):
            assert len(data_listing(archive, None if split == "data" else split).items) == len(names) - 1 - index
