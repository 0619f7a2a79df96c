"""Data layer: loaders on the real shared files, layouts built in tmp_path, duplicates, splits, describe, CLI."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from typer.testing import CliRunner

from core.cli import data_commands
from core.data import (
    ImageSet,
    data_hash,
    dedupe,
    find_duplicates,
    load_dataset,
    make_splits,
    prepare_image,
    read_idx,
    stratified_split,
)
from core.data.describe import describe
from core.data.groups import group_images, kermany_patient
from core.data.loading import load_splits
from core.data.splits import stratified_group_split
from core.errors import PurifyLabError


@pytest.fixture(scope="module")
def pneumonia_npz(shared_data: Path) -> Path:
    return shared_data / "pneumoniamnist_28" / "pneumoniamnist.npz"


@pytest.fixture(scope="module")
def pneumonia_val(pneumonia_npz: Path) -> ImageSet:
    return load_dataset(pneumonia_npz, split="val")


def _save_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _grey_rgb(seed: int, side: int) -> np.ndarray:
    """A grey picture stored as RGB, as the public X-ray sets do."""
    grey = _noise(seed, (side, side))
    return np.stack([grey] * 3, axis=-1)


def _assert_class_balance(labels: np.ndarray, parts: dict[str, np.ndarray], tolerance: float) -> None:
    """Each split's class shares are within `tolerance` of those of all split items together."""
    overall = np.bincount(labels[np.concatenate(list(parts.values()))]) / sum(len(p) for p in parts.values())
    for name, indices in parts.items():
        share = np.bincount(labels[indices], minlength=len(overall)) / len(indices)
        assert np.abs(share - overall).max() <= tolerance, (name, share, overall)


# --- loaders on the real shared files ---------------------------------------------------------


def test_medmnist_npz_split_counts_and_item_view(pneumonia_val: ImageSet, pneumonia_npz: Path) -> None:
    assert pneumonia_val.images.shape == (524, 1, 28, 28) and pneumonia_val.images.dtype == torch.uint8
    assert pneumonia_val.classes == ("NORMAL", "PNEUMONIA")
    assert pneumonia_val.class_counts() == {"NORMAL": 135, "PNEUMONIA": 389}  # SOURCE.md
    assert pneumonia_val.sources[17] == "pneumoniamnist.npz:val[17]"
    assert pneumonia_val.resize is None
    with np.load(pneumonia_npz, allow_pickle=False) as raw:
        assert np.array_equal(pneumonia_val.images[:, 0].numpy(), raw["val_images"])
    item = pneumonia_val.tensor(17)
    assert item.dtype == torch.float32 and item.shape == (1, 28, 28)
    assert torch.equal(item, pneumonia_val.images[17].float() / 255)
    images, labels = next(iter(DataLoader(pneumonia_val.dataset(), batch_size=8)))
    assert images.shape == (8, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(labels, pneumonia_val.labels[:8])


def test_npz_needs_a_split_when_it_holds_several(pneumonia_npz: Path) -> None:
    npz = pneumonia_npz
    with pytest.raises(PurifyLabError, match="holds splits train, val; choose one with --split"):
        load_dataset(npz)
    with pytest.raises(PurifyLabError, match="split 'holdout' not found"):
        load_dataset(npz, split="holdout")


def test_limit_spreads_over_classes_and_resize_is_recorded(shared_data: Path) -> None:
    folder = shared_data / "pneumoniamnist_28"  # a folder holding one data file works too
    small = load_dataset(folder, split="train", limit=10, size=16)
    assert small.class_counts() == {"NORMAL": 5, "PNEUMONIA": 5}
    assert small.images.shape == (10, 1, 16, 16) and small.resize == 16


def test_mnist_idx_matches_header_parse_and_canonical_labels(shared_data: Path) -> None:
    images_file = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    images = read_idx(images_file)
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    digits = load_dataset(images_file, limit=100)
    assert digits.classes == tuple("0123456789") and digits.class_counts() == {str(d): 10 for d in range(10)}
    positions = [int(source.split("[")[1].rstrip("]")) for source in digits.sources]
    assert np.array_equal(digits.images[:, 0].numpy(), images[positions])
    assert digits.labels.tolist() == labels[positions].tolist()
    with pytest.raises(PurifyLabError, match="holds the 'test' split"):
        load_dataset(images_file, split="train")


def test_cifar_tar_reads_rgb_with_the_csv_labels(shared_data: Path) -> None:
    folder = shared_data / "cifar10_test_jpeg_q75"
    cifar = load_dataset(folder / "cifar10_test_jpegs.tar.gz", limit=50)
    assert cifar.images.shape == (50, 3, 32, 32)
    assert cifar.classes[:3] == ("airplane", "automobile", "bird") and len(cifar.classes) == 10
    with open(folder / "labels.csv", newline="") as handle:
        csv_labels = {row["path"]: int(row["label"]) for row in csv.DictReader(handle)}
    members = [source.split(":", 1)[1] for source in cifar.sources]
    assert cifar.labels.tolist() == [csv_labels[m] for m in members]
    with tarfile.open(folder / "cifar10_test_jpegs.tar.gz") as archive:
        first = Image.open(io.BytesIO(archive.extractfile(members[0]).read())).convert("RGB")
    assert np.array_equal(cifar.images[0].numpy(), np.asarray(first).transpose(2, 0, 1))


def test_cifar_tar_and_its_extracted_folder_load_identically(shared_data: Path, tmp_path: Path) -> None:
    archive_path = shared_data / "cifar10_test_jpeg_q75" / "cifar10_test_jpegs.tar.gz"
    wanted = {f"test/{c}/{i:04d}.jpg" for c in ("cat", "dog", "ship") for i in range(4)}
    with tarfile.open(archive_path) as archive:
        for member in archive:
            if member.name in wanted:
                target = tmp_path / "extracted" / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    small_archive = tmp_path / "small.tar.gz"
    with tarfile.open(small_archive, "w:gz") as archive:
        archive.add(tmp_path / "extracted" / "test", arcname="test")
    from_tar = load_dataset(small_archive)
    from_folder = load_dataset(tmp_path / "extracted", split="test")
    assert from_tar.classes == from_folder.classes == ("cat", "dog", "ship")
    assert torch.equal(from_tar.images, from_folder.images) and from_tar.images.shape[1] == 3
    assert torch.equal(from_tar.labels, from_folder.labels)
    assert [s.split(":test/")[1] for s in from_tar.sources] == list(from_folder.sources)


def test_kermany_xrays_load_grey_and_resized_like_pillow(xray_train_dir: Path) -> None:
    xrays = load_dataset(xray_train_dir, size=64, limit=12)
    assert xrays.images.shape == (12, 1, 64, 64) and xrays.resize == 64
    assert xrays.class_counts() == {"NORMAL": 6, "PNEUMONIA": 6}
    for index in (0, 11):
        expected = Image.open(xray_train_dir / xrays.sources[index]).convert("L").resize((64, 64), Image.BILINEAR)
        assert np.array_equal(xrays.images[index, 0].numpy(), np.asarray(expected))
    as_rgb = load_dataset(xray_train_dir, size=64, limit=12, channels=3)
    assert as_rgb.images.shape[1] == 3 and torch.equal(as_rgb.images[:, 1:2], xrays.images)


# --- layouts built in tmp_path ----------------------------------------------------------------


def test_tuberculosis_layout_with_mixed_sizes(tmp_path: Path) -> None:
    root = tmp_path / "TB_Chest_Radiography_Database"
    for i in range(1, 4):
        _save_png(root / "Normal" / f"Normal-{i}.png", _grey_rgb(i, 48))
        _save_png(root / "Tuberculosis" / f"Tuberculosis-{i}.png", _noise(10 + i, (40, 40)))
    (root / "README.md.txt").write_text("metadata, not an image")
    with pytest.raises(PurifyLabError, match="different sizes .*resize them with --size"):
        load_dataset(root)
    tb = load_dataset(root, size=32)
    assert tb.classes == ("Normal", "Tuberculosis") and tb.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert tb.sources[3] == "Tuberculosis/Tuberculosis-1.png"
    assert tb.images.shape == (6, 1, 32, 32)  # grey content stays one channel, stored RGB or L


def test_class_folder_order_matches_torchvision_imagefolder(tmp_path: Path) -> None:
    for name, count in (("b_class", 2), ("A_class", 3), ("c_class", 1)):
        for i in range(count):
            _save_png(tmp_path / name / f"{5 - i}.png", _noise(i, (8, 8)))
    (tmp_path / "A_class" / "notes.txt").write_text("ignored")
    ours = load_dataset(tmp_path)
    theirs = ImageFolder(str(tmp_path))
    assert list(ours.classes) == theirs.classes
    expected = [(str(Path(p).relative_to(tmp_path)), label) for p, label in theirs.samples]
    assert list(zip(ours.sources, ours.labels.tolist(), strict=True)) == expected


def test_broken_images_are_skipped_and_counted(tmp_path: Path) -> None:
    good = _save_png(tmp_path / "NORMAL" / "good.png", _noise(0, (16, 16)))
    _save_png(tmp_path / "PNEUMONIA" / "good.png", _noise(1, (16, 16)))
    (tmp_path / "NORMAL" / "garbage.jpeg").write_bytes(b"this is not a jpeg")
    (tmp_path / "PNEUMONIA" / "truncated.png").write_bytes(good.read_bytes()[:60])
    with pytest.warns(UserWarning, match="skipped 2 undecodable"):
        loaded = load_dataset(tmp_path)
    assert len(loaded) == 2 and set(loaded.skipped) == {"NORMAL/garbage.jpeg", "PNEUMONIA/truncated.png"}
    summary = describe(tmp_path)
    assert summary.counts == {"NORMAL": 1, "PNEUMONIA": 1}
    assert {source for source, _ in summary.undecodable} == set(loaded.skipped)


def test_unknown_layouts_are_refused_with_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(PurifyLabError, match="unknown data layout .*class-per-folder"):
        load_dataset(tmp_path)
    with pytest.raises(PurifyLabError, match="unknown data layout .*MedMNIST"):
        load_dataset(tmp_path / "notes.txt")
    with pytest.raises(PurifyLabError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "fake.npz").write_bytes(b"not a zip")
    with pytest.raises(PurifyLabError, match="cannot read .*npz"):
        load_dataset(tmp_path / "fake.npz")
    with pytest.raises(PurifyLabError, match="channels must be 1, 3 or None"):
        load_dataset(tmp_path, channels=2)
    with pytest.raises(PurifyLabError, match=r"size must be an int in \[1, 1024\]"):
        load_dataset(tmp_path, size=0)


def test_load_split_refuses_an_image_size_no_model_takes(tmp_path: Path) -> None:
    """A typo of 100000 px is refused before decoding, rather than running out of memory."""
    from core.data.loading import load_split

    with pytest.raises(PurifyLabError, match=r"size must be an int in \[1, 1024\] .* got 100000"):
        load_split(tmp_path, "all", image_size=100000, limit=1)


def test_split_folders_need_a_split(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for name in ("NORMAL", "PNEUMONIA"):
            _save_png(tmp_path / split / name / "x.png", _noise(len(split + name), (8, 8)))
    with pytest.raises(PurifyLabError, match="holds splits train, val; choose one with --split"):
        load_dataset(tmp_path)
    val = load_dataset(tmp_path, split="val")
    assert val.classes == ("NORMAL", "PNEUMONIA") and val.sources == ("NORMAL/x.png", "PNEUMONIA/x.png")


def test_colour_wins_under_auto_channels_and_16_bit_is_scaled(tmp_path: Path) -> None:
    _save_png(tmp_path / "colour" / "c.png", _noise(3, (8, 8, 3)))
    _save_png(tmp_path / "grey" / "g.png", _noise(4, (8, 8)))
    mixed = load_dataset(tmp_path)
    assert mixed.images.shape == (2, 3, 8, 8)
    assert torch.equal(mixed.images[1, 0], mixed.images[1, 2])  # the grey one, replicated
    assert load_dataset(tmp_path, channels=1).images.shape == (2, 1, 8, 8)
    wide = np.full((4, 4), 65535, dtype=np.uint16)
    wide[0, 0] = 257 * 100
    pixels = prepare_image(Image.fromarray(wide))
    assert pixels.shape == (1, 4, 4) and pixels[0, 0, 0] == 100 and pixels[0, 1, 1] == 255


def test_cache_round_trips_and_follows_file_changes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    changed = _save_png(data / "a" / "1.png", _noise(0, (12, 12)))
    _save_png(data / "b" / "1.png", _noise(1, (12, 12)))
    cache = tmp_path / "cache"
    first = load_dataset(data, size=8, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1
    again = load_dataset(data, size=8, cache_dir=cache)
    assert torch.equal(again.images, first.images) and again.sources == first.sources and again.resize == 8
    _save_png(changed, _noise(2, (12, 12)))
    edited = load_dataset(data, size=8, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2 and not torch.equal(edited.images[0], first.images[0])


# --- duplicates and splits --------------------------------------------------------------------


def test_find_duplicates_and_dedupe_keep_the_first(pneumonia_val: ImageSet) -> None:
    with_copies = pneumonia_val.subset([0, 1, 2, 3, 0, 5, 1, 1])
    assert find_duplicates(with_copies) == [[0, 4], [1, 6, 7]]
    unique, removed = dedupe(with_copies)
    assert removed == [4, 6, 7] and len(unique) == 5 and find_duplicates(unique) == []


def test_stratified_split_is_disjoint_stratified_and_seeded(pneumonia_npz: Path) -> None:
    with np.load(pneumonia_npz) as raw:
        labels = raw["train_labels"][:, 0].astype(np.int64)
    parts = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    together = np.concatenate(list(parts.values()))
    assert len(together) == len(np.unique(together)) == len(labels)
    sizes = [len(parts[n]) for n in ("train", "val", "test")]
    assert sizes == pytest.approx([0.8 * 4708, 0.1 * 4708, 0.1 * 4708], abs=2)
    _assert_class_balance(labels, parts, tolerance=0.01)
    again = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    assert all(np.array_equal(parts[n], again[n]) for n in parts)
    assert not np.array_equal(parts["val"], stratified_split(labels, (0.8, 0.1, 0.1), seed=1)["val"])
    with pytest.raises(PurifyLabError, match="adding up to 1"):
        stratified_split(labels, (0.8, 0.3, 0.1))


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.integers(0, 3), min_size=1, max_size=300), seed=st.integers(0, 2**32 - 1))
def test_stratified_split_partitions_every_class_in_proportion(labels: list[int], seed: int) -> None:
    fractions = (0.7, 0.2, 0.1)
    parts = stratified_split(labels, fractions, seed=seed)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    labels = np.array(labels)
    for label in np.unique(labels):
        members = int((labels == label).sum())
        for name, fraction in zip(("train", "val", "test"), fractions, strict=True):
            assert abs(int((labels[parts[name]] == label).sum()) - members * fraction) < 1


def test_make_splits_keeps_duplicates_out_and_saves(pneumonia_val: ImageSet, tmp_path: Path) -> None:
    copies = np.arange(0, 524, 7)  # 75 injected duplicates, spread over both classes
    data = pneumonia_val.subset(np.concatenate([np.arange(524), copies]))
    spec = make_splits(data, val=0.1, test=0.1, seed=0)
    assert len(spec.duplicates_removed) == len(copies)
    used = np.concatenate([np.array(v, dtype=np.int64) for v in spec.indices.values()])
    assert len(used) == len(np.unique(used)) == len(data) - len(copies)
    split_of = {int(i): name for name, indices in spec.indices.items() for i in indices}
    for group in find_duplicates(data):
        assert sum(i in split_of for i in group) == 1  # no duplicate crosses (or repeats in) a split
    _assert_class_balance(data.labels.numpy(), {k: np.array(v) for k, v in spec.indices.items()}, tolerance=0.01)
    assert spec.data_hash == data_hash(data) and spec.classes == ("NORMAL", "PNEUMONIA")
    assert make_splits(data, seed=0) == spec
    saved = json.loads(spec.save(tmp_path / "split.json").read_text())
    assert saved["format"] == 2 and saved["indices"] == {name: list(indices) for name, indices in spec.indices.items()}


@settings(max_examples=40, deadline=None)
@given(
    patients=st.lists(st.tuples(st.integers(0, 1), st.integers(1, 12)), min_size=3, max_size=120),
    seed=st.integers(0, 2**32 - 1),
)
def test_group_split_never_puts_a_group_on_two_sides(patients: list[tuple[int, int]], seed: int) -> None:
    labels = np.array([label for label, count in patients for _ in range(count)])
    groups = [f"p{index}" for index, (_, count) in enumerate(patients) for _ in range(count)]
    parts = stratified_group_split(labels, groups, (0.7, 0.3, 0.0), seed=seed)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(labels.size))
    assert parts["test"].size == 0
    sides = [{groups[i] for i in parts[name]} for name in ("train", "val")]
    assert not sides[0] & sides[1]
    assert stratified_group_split(labels, groups, (0.7, 0.3, 0.0), seed=seed)["val"].tolist() == parts["val"].tolist()


def test_kermany_file_names_give_patients() -> None:
    assert kermany_patient("PNEUMONIA/person1_bacteria_1.jpeg") == "PNEUMONIA/person1"
    assert kermany_patient("PNEUMONIA/person1_virus_12.jpeg") == "PNEUMONIA/person1"
    assert kermany_patient("PNEUMONIA/person1000_virus_1681_2.jpeg") == "PNEUMONIA/person1000"
    assert kermany_patient("NORMAL/IM-0115-0001.jpeg") == "NORMAL/IM-0115"
    assert kermany_patient("NORMAL/IM-0429-0001-0002.jpeg") == "NORMAL/IM-0429"
    assert kermany_patient("NORMAL/NORMAL2-IM-1234-0001.jpeg") == "NORMAL/NORMAL2-IM-1234"
    assert kermany_patient("NORMAL/scan_7.png") is None


def test_groups_csv_wins_and_unknown_names_warn(tmp_path: Path) -> None:
    for name in ("a1.png", "a2.png", "b1.png"):
        _save_png(tmp_path / "NORMAL" / name, _noise(len(name), (8, 8)))
    sources = ["NORMAL/a1.png", "NORMAL/a2.png", "NORMAL/b1.png"]
    with pytest.warns(UserWarning, match="each image is its own group"):
        assert group_images(sources, tmp_path).rule == "one group per image"
    (tmp_path / "groups.csv").write_text("path,group\nNORMAL/a1.png,A\nNORMAL/a2.png,A\nNORMAL/b1.png,B\n")
    grouping = group_images(sources, tmp_path)
    assert grouping.ids == ("A", "A", "B") and grouping.rule == "groups.csv"
    (tmp_path / "groups.csv").write_text("path,group\nNORMAL/a1.png,A\n")
    with pytest.raises(PurifyLabError, match="names no group for 2"):
        group_images(sources, tmp_path)


def test_groups_csv_cells_are_read_as_a_hand_written_file_has_them(tmp_path: Path) -> None:
    """A trailing space made one patient two groups (18 of 40 patients then sat on both sides of the
    split); a header 'path, group' or `find .`'s './' prefix were refused as missing columns or rows."""
    sources = ["NORMAL/a1.png", "NORMAL/a2.png", "NORMAL/b1.png"]
    (tmp_path / "groups.csv").write_text("path, group\n./NORMAL/a1.png,A\nNORMAL/a2.png,A \n NORMAL/b1.png , B\n")
    assert group_images(sources, tmp_path).ids == ("A", "A", "B")
    (tmp_path / "groups.csv").write_text(f"path,group\n{tmp_path}/NORMAL/a1.png,A\n")
    with pytest.raises(PurifyLabError, match=r"paths are CLASS/IMAGE relative to its folder \(it lists e.g. /"):
        group_images(sources, tmp_path)


def test_data_split_of_a_split_folder_reads_that_folders_groups_csv(tmp_path: Path) -> None:
    """`data split DIR --split train` looked for DIR/groups.csv and split DIR/train image by image."""
    for split in ("train", "val"):
        for index in range(4):
            for label in ("NORMAL", "PNEUMONIA"):
                _save_png(tmp_path / split / label / f"{index}.png", _noise(index + 10 * len(label) + 100 * len(split), (8, 8)))
    rows = "".join(f"{label}/{index}.png,{label}{index // 2}\n" for label in ("NORMAL", "PNEUMONIA") for index in range(4))
    (tmp_path / "train" / "groups.csv").write_text("path,group\n" + rows)
    result = CliRunner().invoke(_cli(), ["data", "split", str(tmp_path), "--split", "train", "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "s.json").read_text())
    assert (spec["grouping"], spec["group_count"]) == ("groups.csv", 4)


def test_data_split_leaving_no_training_images_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    """`--val 0.5 --test 0.45` on 8 patients wrote "train 0, val 4, test 4": whole patients are rounded."""
    for index in range(4):
        for label in ("NORMAL", "PNEUMONIA"):
            _save_png(tmp_path / "data" / label / f"{index}.png", _noise(index + 10 * len(label), (8, 8)))
    out = tmp_path / "s.json"
    result = CliRunner().invoke(_cli(), ["data", "split", str(tmp_path / "data"), "--val", "0.5", "--test", "0.45", "--out", str(out)])
    assert str(result.exception) == "val 0.5 and test 0.45 of 8 groups leave none to train on; lower --val or --test"
    assert not out.exists() and not out.with_name("s.config.json").exists()


def test_a_copy_of_training_images_is_read_as_new_data_only_with_a_warning(xray_train_dir: Path, xray_test_dir: Path, tmp_path: Path) -> None:
    """100 training X-rays copied elsewhere read 'split all, accuracy 0.96' with no remark: the folder
    was not the training folder by its hash, so its images counted as new patients."""
    import shutil

    from core.data.loading import resolve_split
    from core.data.locations import default_data_for

    assert default_data_for("student_cnn").resolve() == xray_train_dir.resolve()
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / label).mkdir()
        for source in sorted((xray_train_dir / label).glob("*.jpeg"))[:2]:
            shutil.copy(source, tmp_path / label / source.name)
    card = {"name": "student_cnn", "data": {"data_hash": "0" * 64}}
    with pytest.warns(UserWarning, match=r"4 of the 4 images of .* are, by file name, images of the folder student_cnn was trained on"):
        assert resolve_split(tmp_path, None, card) == "all"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_split(xray_test_dir, None, card) == "all"


def test_the_project_split_of_the_kermany_train_folder_keeps_patients_apart(xray_train_dir: Path) -> None:
    splits = load_splits(xray_train_dir, ("train", "val"), 16)
    patients = {name: {kermany_patient(source) for source in split.sources} for name, split in splits.items()}
    assert None not in patients["train"] | patients["val"]
    assert not patients["train"] & patients["val"]
    assert len(splits["val"].labels) / (len(splits["train"].labels) + len(splits["val"].labels)) == pytest.approx(0.15, abs=0.01)
    normal_share = [float((split.labels == 0).float().mean()) for split in splits.values()]
    assert abs(normal_share[0] - normal_share[1]) < 0.02
    with pytest.raises(PurifyLabError, match="separate test folder"):
        load_splits(xray_train_dir, ("test",), 16)


def test_one_stray_name_keeps_the_kermany_patients_of_the_others_apart(tmp_path: Path) -> None:
    """Three images for each of 20 Kermany-named patients and one file named otherwise: the patients
    stay on one side of the split, the stray file is its own group, and the warning counts it alone."""
    for patient in range(10):
        for image in range(1, 4):
            _save_png(tmp_path / "NORMAL" / f"IM-{patient:04d}-{image:04d}.png", _noise(100 * patient + image, (8, 8)))
            _save_png(tmp_path / "PNEUMONIA" / f"person{patient}_bacteria_{image}.png", _noise(5000 + 100 * patient + image, (8, 8)))
    _save_png(tmp_path / "NORMAL" / "scan_extra.png", _noise(9999, (8, 8)))
    with pytest.warns(UserWarning, match="^1 of 61 names are not Kermany file names \\(e.g. NORMAL/scan_extra.png\\)"):
        splits = load_splits(tmp_path, ("train", "val"), 8)
    patients = {name: {kermany_patient(source) or source for source in split.sources} for name, split in splits.items()}
    assert not patients["train"] & patients["val"]
    assert "NORMAL/scan_extra.png" in patients["train"] | patients["val"]
    assert splits["val"].cut.startswith("deduplicated; by patient")


# --- describe and the CLI ---------------------------------------------------------------------


def test_describe_reports_sizes_modes_and_duplicates(tmp_path: Path) -> None:
    twin = _grey_rgb(7, 20)
    _save_png(tmp_path / "Normal" / "Normal-1.png", twin)
    _save_png(tmp_path / "Normal" / "Normal-2.png", _noise(8, (30, 20)))
    _save_png(tmp_path / "Tuberculosis" / "Tuberculosis-1.png", twin[..., 0])  # same pixels, stored as L
    summary = describe(tmp_path)
    assert summary.counts == {"Normal": 2, "Tuberculosis": 1} and summary.total == 3
    assert summary.sizes[0] == (20, 20, 2) and summary.smallest == (20, 20) and summary.largest == (20, 30)
    assert summary.modes == {"RGB": 1, "L": 2} and summary.channels == 1
    assert summary.duplicate_groups == (("Normal/Normal-1.png", "Tuberculosis/Tuberculosis-1.png"),)
    assert summary.duplicates_across_classes == 1
    assert "Normal/Normal-1.png = Tuberculosis/Tuberculosis-1.png" in summary.table()


def _cli() -> typer.Typer:
    app = typer.Typer()
    groups = {"data": typer.Typer()}
    app.add_typer(groups["data"], name="data")
    data_commands.register(app, groups)
    return app


def test_cli_describe_and_split(pneumonia_val: ImageSet, pneumonia_npz: Path, tmp_path: Path) -> None:
    npz = pneumonia_npz
    runner = CliRunner()
    summary_file = tmp_path / "d.json"
    described = runner.invoke(_cli(), ["data", "describe", str(npz), "--split", "val", "--json", str(summary_file)])
    assert described.exit_code == 0, described.output
    assert "NORMAL" in described.output and "389" in described.output
    assert json.loads(summary_file.read_text())["counts"] == {"NORMAL": 135, "PNEUMONIA": 389}
    out = tmp_path / "split.json"
    split = runner.invoke(_cli(), ["data", "split", str(npz), "--split", "val", "--seed", "0", "--out", str(out)])
    assert split.exit_code == 0, split.output
    assert out.read_text() == make_splits(pneumonia_val, seed=0).to_json()
    missing = runner.invoke(_cli(), ["data", "describe", str(tmp_path / "nowhere")])
    assert isinstance(missing.exception, PurifyLabError)


# --- the full Kermany set -----------------------------------------------------------------------


def _file_duplicate_groups(labels_csv: Path) -> set[tuple[str, ...]]:
    """Groups of byte-identical files according to the sha256 column shipped with the data."""
    by_hash: dict[str, list[str]] = {}
    with open(labels_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            by_hash.setdefault(row["sha256"], []).append(row["path"].removeprefix("train/"))
    return {tuple(sorted(group)) for group in by_hash.values() if len(group) > 1}


def test_kermany_describe_counts_and_duplicate_groups(xray_train_dir: Path) -> None:
    summary = describe(xray_train_dir)
    assert summary.counts == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert summary.sizes == ((224, 224, 5216),) and summary.channels == 1 and not summary.undecodable
    groups = {tuple(sorted(group)) for group in summary.duplicate_groups}
    assert groups == _file_duplicate_groups(xray_train_dir.parent / "labels.csv")
    assert len(groups) == 24 and summary.duplicates_across_classes == 0


@pytest.mark.slow
def test_kermany_splits_keep_duplicates_apart(xray_train_dir: Path) -> None:
    xrays = load_dataset(xray_train_dir, size=64)
    spec = make_splits(xrays, seed=0)
    assert len(spec.duplicates_removed) == 26
    split_of = {i: name for name, indices in spec.indices.items() for i in indices}
    assert all(sum(i in split_of for i in group) == 1 for group in find_duplicates(xrays))
    _assert_class_balance(xrays.labels.numpy(), {k: np.array(v) for k, v in spec.indices.items()}, tolerance=0.01)
