"""Loaders per on-disk layout, all producing one `ImageSet`.

Each layout is first turned into a `Listing` (class names plus, per item, a source string, a label
and a way to open it as a PIL image); decoding, channel handling, resizing, skipping undecodable
files and caching are then shared by every layout, so all of them behave the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.data.decode import DECODE_ERRORS, Decoded, check_channels, check_size, decode, parallel_map
from core.data.warning import warn, warn_once
from core.errors import PurifyLabError
from core.image_file import MAX_UPLOAD_BYTES, UPLOAD_EXTENSIONS, is_special_file

if TYPE_CHECKING:
    from core.data.imageset import ImageSet

# torchvision's ImageFolder extensions.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
# MedMNIST files carry no class names; these come from MedMNIST's INFO table, upper-cased to match
# the folder names of the Kermany set they derive from (0 = NORMAL, 1 = PNEUMONIA).
MEDMNIST_CLASS_NAMES = {"pneumoniamnist": ("NORMAL", "PNEUMONIA")}
# MNIST idx files are named <prefix>-images-idx3-ubyte[.gz]; the prefix says which split they hold.
IDX_SPLITS = {"train": "train", "t10k": "test"}
EXPECTED_LAYOUTS = (
    "a class-per-folder directory (CLASS/IMAGE files), a folder of split folders with split=,"
    " a MedMNIST .npz, an MNIST *-images-idx3-ubyte[.gz] file, or a .tar.gz of [SPLIT/]CLASS/IMAGE files"
)
IMAGE_FORMATS = "PNG, JPEG, BMP, TIFF, WebP or PPM/PGM"
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})
# Images an upload reads but a data set does not (GIF, JFIF, DICOM, ...): named when a class folder
# holds them. Reading them would change the names hash (`data_hash`) of existing data sets.
UNREAD_IMAGE_EXTENSIONS = frozenset(UPLOAD_EXTENSIONS) - IMAGE_EXTENSIONS
GZIP_MAGIC = b"\x1f\x8b"
# A label this large is a typo or another file's column: a data set with more classes has no place here.
MAX_CLASSES = 1000
MAX_NPZ_ARRAY_BYTES = 4 * 1024**3
"""The largest .npz array read. numpy allocates the shape a member's header declares before it reads
a byte of data, so a 610-byte file declaring (1000000, 1024, 1024) asked for 977 GiB; the header is
checked first. 4 GiB holds PneumoniaMNIST at 224 px (5,856 images, 294 MB), the MedMNIST set whose
class names this loader knows, more than ten times over."""


@dataclass(frozen=True)
class Item:
    source: str
    label: int
    open: Callable[[], Image.Image]


@dataclass(frozen=True)
class Listing:
    """What a path holds, before any pixel is decoded."""

    layout: str  # "class folders", "tar archive", "MedMNIST npz", "MNIST idx"
    location: str  # the folder, or file plus split, the items were taken from
    classes: tuple[str, ...]
    items: tuple[Item, ...]
    backing_files: tuple[Path, ...]  # files on disk whose size and mtime key the cache
    named: bool = True  # False where images are known by index only (an MNIST idx, a MedMNIST npz)

    def limited(self, limit: int | None) -> Listing:
        """At most `limit` items, taken round-robin over classes so that a small limit still has every class."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise PurifyLabError(f"limit must be a positive int or None, got {limit!r}")
        if limit is None or limit >= len(self.items):
            return self
        queues = [[i for i, item in enumerate(self.items) if item.label == label] for label in range(len(self.classes))]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < limit:
            for queue in queues:
                if depth < len(queue) and len(chosen) < limit:
                    chosen.append(queue[depth])
            depth += 1
        return replace(self, items=tuple(self.items[i] for i in sorted(chosen)))


def is_image_file(path: Path | PurePosixPath) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _is_image_entry(path: Path) -> bool:
    """An image-named file, or an image-named link that leads nowhere: listed, so that decoding
    counts it as undecodable instead of it vanishing from the listing."""
    return is_image_file(path) and (path.is_file() or (path.is_symlink() and not path.is_dir()))


def _entries(folder: Path) -> list[Path]:
    """The entries of `folder`; one the system will not list is refused in one line."""
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise PurifyLabError(f"cannot read {folder}: {error.strerror or error}") from None


def _sub_folders(directory: Path) -> list[Path]:
    """The visible sub-folders of `directory` (links to folders included), sorted by name."""
    return sorted(p for p in _entries(directory) if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in _entries(folder) if _is_image_entry(p))


def _class_folders(directory: Path) -> list[Path]:
    """Sub-folders holding image files directly, in torchvision ImageFolder's (sorted name) order."""
    return [p for p in _sub_folders(directory) if any(_is_image_entry(f) for f in _entries(p))]


def _unread_images(root: Path) -> list[str]:
    """Files of the sub-folders of `root` in a format uploads read and data sets do not."""
    return [
        f"{folder.name}/{file.name}"
        for folder in _sub_folders(root)
        for file in sorted(_entries(folder))
        if file.suffix.lower() in UNREAD_IMAGE_EXTENSIONS and not file.name.startswith(".")
    ]


def _left_out_images(root: Path, class_folders: list[Path]) -> list[Path]:
    """Image files deeper than CLASS/IMAGE below `root` (links to folders followed only for class
    folders): the loader reads CLASS/IMAGE, so these, and a class whose images all sit in
    sub-folders, would be lost."""
    found = []
    for child in (p for p in _sub_folders(root) if p in class_folders or not p.is_symlink()):
        for parent, dirs, files in os.walk(child):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if Path(parent) != child:
                found.extend(Path(parent) / name for name in sorted(files) if is_image_file(Path(name)))
    return found


def _open_bytes(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def _open_file(path: Path) -> Image.Image:
    """Image.open, refusing a link to a FIFO or a device: opening one blocks, or never ends."""
    if is_special_file(path):
        raise PurifyLabError("not a regular file (a link to a pipe, device or socket)")
    return Image.open(path)


def _refuse_oversized(size: int) -> Image.Image:
    raise PurifyLabError(f"member is {size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")


def _warn_loose_images(folder: Path) -> None:
    """Images directly in the data folder, beside its class (or split) folders, belong to no class."""
    loose = _image_files(folder)
    if loose:
        warn_once(
            f"{len(loose)} image file(s) directly in {folder} not read (e.g. {loose[0].name}): the loader reads "
            "[SPLIT/]CLASS/IMAGE files; move them into their class folder"
        )


def _list_class_folders(root: Path) -> Listing:
    _warn_loose_images(root)
    folders = _class_folders(root)
    nested = _left_out_images(root, folders)
    if nested:
        raise PurifyLabError(
            f"{root} holds {len(nested)} image(s) in sub-folders of its class folders (e.g. {nested[0].relative_to(root).as_posix()}), "
            "which would be left out; the loader reads CLASS/IMAGE: move them up into their class folder"
        )
    unread = _unread_images(root)
    if unread:
        warn_once(
            f"{len(unread)} file(s) in the class folders of {root} not read (e.g. {unread[0]}): data sets are read from "
            f"{IMAGE_FORMATS} files; convert the others to PNG to include them"
        )
    items = []
    files = []
    for label, folder in enumerate(folders):
        for file in _image_files(folder):
            items.append(Item(f"{folder.name}/{file.name}", label, partial(_open_file, file)))
            files.append(file)
    return Listing("class folders", str(root), tuple(p.name for p in folders), tuple(items), tuple(files))


class SplitsInData(PurifyLabError):
    """The data holds several splits of its own (npz keys, split folders) and none was chosen;
    `available` lets a caller pick one (core.data.loading reads `--split` that way)."""

    def __init__(self, where: str, available: list[str]):
        super().__init__(f"{where} holds splits {', '.join(available)}; choose one with --split")
        self.available = tuple(available)


def _choose_split(split: str | None, available: list[str], where: str) -> str:
    if split is None:
        if len(available) == 1:
            return available[0]
        raise SplitsInData(where, available)
    if split not in available:
        raise PurifyLabError(f"split '{split}' not found in {where}; available: {', '.join(available)}")
    return split


def _check_archive_end(archive: tarfile.TarFile, path: Path) -> None:
    """Python's tarfile takes a damaged header after the first for the end of the archive: what
    follows the last member read must be the end-of-archive zero blocks (or nothing), else the rest
    of the archive would be left out without a word."""
    archive.fileobj.seek(archive.offset)  # the block just read: a seek within the read buffer
    if archive.fileobj.read(tarfile.BLOCKSIZE).strip(b"\0"):
        raise PurifyLabError(f"tar archive {path} is corrupt after member {len(archive.members)}: the next header is damaged")


def _list_tar(path: Path, split: str | None) -> Listing:
    """Reads member bytes in one pass through the archive: no extraction to disk. A member larger
    than an upload may be is listed unread, and skipped as undecodable. Members in hidden folders
    are skipped, as hidden folders on disk are."""
    members: dict[PurePosixPath, Callable[[], Image.Image]] = {}
    links = []
    loose = []
    names: Counter[PurePosixPath] = Counter()
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = PurePosixPath(member.name.removeprefix("./"))
                hidden = any(part.startswith(".") for part in name.parts)
                if hidden or not is_image_file(name) or not (member.isfile() or member.islnk() or member.issym()):
                    continue
                names[name] += 1
                if len(name.parts) < 2:
                    loose.append(name.as_posix())
                elif member.islnk() or member.issym():
                    links.append(name.as_posix())
                elif member.size > MAX_UPLOAD_BYTES:
                    members[name] = partial(_refuse_oversized, member.size)
                else:
                    members[name] = partial(_open_bytes, archive.extractfile(member).read())
            _check_archive_end(archive, path)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise PurifyLabError(f"cannot read tar archive {path}: {error}") from None
    repeated = sorted(name.as_posix() for name, count in names.items() if count > 1)
    if repeated:
        raise PurifyLabError(
            f"tar archive {path} holds {len(repeated)} member name(s) more than once (e.g. {repeated[0]}, "
            f"{names[PurePosixPath(repeated[0])]} times); all but one of each would be lost: archive each image under a name of its own"
        )
    if loose:
        warn_once(
            f"tar archive {path}: {len(loose)} image member(s) at the top level not read (e.g. {loose[0]}); the loader reads "
            "[SPLIT/]CLASS/IMAGE members: move them into their class folder"
        )
    if links:
        warn_once(
            f"tar archive {path}: {len(links)} link member(s) not read (e.g. {links[0]}); the loader reads regular members: "
            "archive the files the links point to (tar --dereference --hard-dereference)"
        )
    if not members:
        raise PurifyLabError(f"tar archive {path} holds no CLASS/IMAGE files; expected [SPLIT/]CLASS/IMAGE members")
    in_split_folders = _split_folder_images(path, list(members))
    splits = sorted({"/".join(name.parts[:-2]) for name in members if name not in in_split_folders})
    if splits == [""]:
        if split is not None:
            raise PurifyLabError(f"tar archive {path} has no split folders; leave split unset")
        chosen = ""
    elif "" in splits:
        loose = sorted(name.as_posix() for name in members if len(name.parts) == 2)
        raise PurifyLabError(
            f"tar archive {path} mixes {len(loose)} CLASS/IMAGE member(s) (e.g. {loose[0]}) with SPLIT/CLASS/IMAGE ones "
            f"({', '.join(s for s in splits if s)}); use one layout"
        )
    else:
        chosen = _choose_split(split, splits, str(path))
        read_under = {PurePosixPath(chosen), *PurePosixPath(chosen).parents}  # the split folder and the folders above it
        stray = sorted(name.as_posix() for name in in_split_folders if name.parent in read_under)
        if stray:
            warn_once(
                f"tar archive {path}: {len(stray)} image member(s) outside the class folders of split {chosen} not read (e.g. {stray[0]}); "
                "the loader reads [SPLIT/]CLASS/IMAGE members: move them into their class folder"
            )
    selected = sorted((name for name in members if name not in in_split_folders and "/".join(name.parts[:-2]) == chosen), key=lambda n: (n.parts[-2], n.name))
    classes = tuple(sorted({name.parts[-2] for name in selected}))
    label_of = {name: i for i, name in enumerate(classes)}
    items = tuple(Item(f"{path.name}:{name}", label_of[name.parts[-2]], members[name]) for name in selected)
    location = f"{path}:{chosen}" if chosen else str(path)
    return Listing("tar archive", location, classes, items, (path,))


def _split_folder_images(path: Path, names: list[PurePosixPath]) -> set[PurePosixPath]:
    """The images lying beside folders of images in a folder that is no class folder (a split folder,
    or the one top folder `tar czf x.tgz data/` adds): they belong to no class, and are dropped with a
    word, as `_warn_loose_images` drops them on disk. Such a folder is told from a class folder with
    images nested in it by its siblings: a class folder's are class folders, holding images of their
    own. Images nested in a class folder are refused: they would be left out, or the class folder
    taken for a split."""
    holding = {name.parent for name in names}  # folders with images of their own
    above_images = {folder for inner in holding for folder in inner.parents}
    split_folders = {folder for folder in holding & above_images if not any(other.parent == folder.parent and other != folder for other in holding)}
    nested = sorted(name.as_posix() for name in names if any(ancestor in holding - split_folders for ancestor in name.parent.parents))
    if nested:
        raise PurifyLabError(
            f"tar archive {path} holds {len(nested)} image(s) nested inside class folders (e.g. {nested[0]}), which would be left out; "
            "the loader reads [SPLIT/]CLASS/IMAGE: move them up into their class folder"
        )
    return {name for name in names if name.parent in split_folders}


def _labels_vector(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise PurifyLabError(f"{where} labels have shape {labels.shape}; only single-label (N,) or (N, 1) is supported")
    if labels.dtype.kind not in "iu":
        raise PurifyLabError(f"{where} labels dtype is {labels.dtype}; expected integer class indices (0.9 is no class)")
    if labels.size and labels.min() < 0:
        raise PurifyLabError(f"{where} has negative labels; expected class indices 0..K-1")
    return labels.astype(np.int64)


def _class_count(labels: dict[str, np.ndarray], where: str) -> int:
    """K of labels 0..K-1 over all splits; a gap (an unused class) or an absurd K is a broken labels
    array, refused before anything is sized by K."""
    present = np.unique(np.concatenate(list(labels.values())))
    count = int(present[-1]) + 1 if present.size else 0
    if count > MAX_CLASSES:
        raise PurifyLabError(f"{where} has label {count - 1}; more than {MAX_CLASSES} classes is not a data set this loader reads")
    if present.size != count:
        unused = sorted(set(range(count)) - set(present.tolist()))
        raise PurifyLabError(f"{where} labels run to {count - 1} but no image has class {unused[0]}; expected class indices 0..K-1, each used")
    return count


def _npz_reason(error: Exception) -> str:
    """numpy's reason, without its advice to load the file "unsafely" with allow_pickle (code could run)."""
    if "allow_pickle" in str(error):
        return "it holds pickled objects or is no array file at all; only plain arrays are read, never pickles"
    return str(error)


def _array(archive: np.lib.npyio.NpzFile, key: str, where: str) -> np.ndarray:
    """archive[key], once its .npy header declares no more than MAX_NPZ_ARRAY_BYTES: numpy allocates
    the declared shape before reading the data."""
    member = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
    with archive.zip.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        # format 3.0 differs from 2.0 only in the header's text encoding
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    declared = math.prod(shape) * dtype.itemsize
    if declared > MAX_NPZ_ARRAY_BYTES:
        raise PurifyLabError(f"{where}:{key} declares {shape} {dtype} values, {declared:,} bytes; the limit is {MAX_NPZ_ARRAY_BYTES:,}")
    return archive[key]


def _list_npz(path: Path, split: str | None) -> Listing:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            prefixes = (k.removesuffix("_images") for k in keys if k.endswith("_images"))
            splits = sorted(p for p in prefixes if f"{p}_labels" in keys)
            if not splits:
                raise PurifyLabError(f"{path} has no <split>_images / <split>_labels arrays (MedMNIST layout)")
            chosen = _choose_split(split, splits, str(path))
            images = _array(archive, f"{chosen}_images", str(path))
            labels = {s: _labels_vector(_array(archive, f"{s}_labels", str(path)), f"{path}:{s}") for s in splits}
    except PurifyLabError:
        raise
    except (OSError, ValueError, MemoryError, zipfile.BadZipFile, zlib.error) as error:
        raise PurifyLabError(f"cannot read {path} as a .npz archive: {_npz_reason(error)}") from None
    class_count = _class_count(labels, str(path))  # same classes in every split
    labels = labels[chosen]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise PurifyLabError(f"{path}:{chosen}_images must be uint8 (N, H, W) or (N, H, W, 1|3), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise PurifyLabError(f"{path}:{chosen} has {len(images)} images but {len(labels)} labels")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    known = MEDMNIST_CLASS_NAMES.get(path.stem.split("_")[0])
    classes = known if known and len(known) == class_count else tuple(str(i) for i in range(class_count))
    items = tuple(Item(f"{path.name}:{chosen}[{i}]", int(label), partial(Image.fromarray, images[i])) for i, label in enumerate(labels))
    return Listing("MedMNIST npz", f"{path}:{chosen}", classes, items, (path,), named=False)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: 2 zero bytes, a type code, a rank, big-endian uint32 dims, data) as uint8,
    gzip-compressed or not, as its first bytes say (not its name: .GZ is gzip too)."""
    try:
        data = path.read_bytes()
        if data.startswith(GZIP_MAGIC):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise PurifyLabError(f"cannot read idx file {path}: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise PurifyLabError(f"{path} is not an unsigned-byte idx file (expected magic 0x0000 08 <rank>)")
    rank = data[3]
    if len(data) < 4 + 4 * rank:
        raise PurifyLabError(f"{path} header says {rank} dimensions but the file ends at byte {len(data)}, within them")
    dims = np.frombuffer(data, dtype=">u4", count=rank, offset=4).astype(np.int64)
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if values.size != int(np.prod(dims)):
        raise PurifyLabError(f"{path} header says {tuple(dims)} but holds {values.size} values")
    return values.reshape(tuple(dims))


def _list_idx(path: Path, split: str | None) -> Listing:
    prefix = path.name.split("-images-idx3-ubyte")[0]
    file_split = IDX_SPLITS.get(prefix, prefix)
    if split is not None and split != file_split:
        raise PurifyLabError(f"{path.name} holds the '{file_split}' split, not '{split}'")
    labels_path = path.with_name(path.name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte"))
    if not labels_path.is_file():
        raise PurifyLabError(f"labels file {labels_path.name} not found beside {path.name}")
    images = read_idx(path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise PurifyLabError(f"{path.name} {images.shape} and {labels_path.name} {labels.shape} are not (N, H, W) images with N labels")
    classes = tuple(str(i) for i in range(int(labels.max(initial=0)) + 1))
    items = tuple(Item(f"{path.name}[{i}]", int(label), partial(Image.fromarray, images[i])) for i, label in enumerate(labels))
    return Listing("MNIST idx", str(path), classes, items, (path, labels_path), named=False)


def _file_lister(path: Path) -> Callable[[Path, str | None], Listing] | None:
    name = path.name.lower()
    if name.endswith(".npz"):
        return _list_npz
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _list_tar
    if "-images-idx3-ubyte" in name:
        return _list_idx
    return None


def _list_directory(directory: Path, split: str | None) -> Listing:
    if split is not None and (directory / split).is_dir():
        _warn_loose_images(directory)
        if not _class_folders(directory / split):
            raise PurifyLabError(f"{directory / split} has no class folders with images; expected {EXPECTED_LAYOUTS}")
        return _list_class_folders(directory / split)
    if _class_folders(directory):
        if split is not None:
            raise PurifyLabError(f"{directory} holds class folders, not a '{split}' split folder; leave split unset")
        return _list_class_folders(directory)
    data_files = sorted(p for p in _entries(directory) if p.is_file() and _file_lister(p))
    if len(data_files) == 1:
        return _file_lister(data_files[0])(data_files[0], split)
    if len(data_files) > 1:
        names = ", ".join(p.name for p in data_files)
        raise PurifyLabError(f"{directory} holds several data files ({names}); pass one of them as the path")
    split_folders = sorted(p.name for p in _entries(directory) if p.is_dir() and _class_folders(p))
    if split_folders:
        _choose_split(split, split_folders, str(directory))  # raises: split missing or unknown
    raise PurifyLabError(_unknown_layout(directory))


def _unknown_layout(path: Path) -> str:
    """Why `path` is no data set, in the words that help: one image, or DICOM class folders, are
    read by other commands."""
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS | DICOM_EXTENSIONS:
        return f"{path} is one image; --data takes a folder or data file ({EXPECTED_LAYOUTS}); for one image use attack or purify"
    if path.is_dir():
        dicom = [p for folder in _entries(path) if folder.is_dir() for p in _entries(folder) if p.suffix.lower() in DICOM_EXTENSIONS]
        if dicom:
            return (
                f"{path} holds DICOM files (e.g. {dicom[0].relative_to(path).as_posix()}); data sets are read from {IMAGE_FORMATS} files, "
                "and DICOM files one at a time (attack, purify, the app): export the set to PNG first"
            )
    return f"unknown data layout at {path}; expected {EXPECTED_LAYOUTS}"


@dataclass(frozen=True)
class SharedImages:
    """The images of some data that are images of a reference data set, and how they were known."""

    sources: list[str]
    listed: int  # how many images the data lists
    how: str  # in a warning's words


def images_also_in(data_dir: str | Path, reference: str | Path, split: str | None = None) -> SharedImages:
    """The images of `data_dir` (at `split`, as `data_listing` reads it) that are images of `reference`,
    so a copy, a subset or a renamed folder is caught too; listing only where names decide. In a
    folder (the Kermany sets) a CLASS/IMAGE name names one patient's image and decides alone; the
    Kermany train and test folders share no name. An archive's names (CIFAR's per-class 0000.jpg)
    recur in every export of the data set, so a name match is confirmed pixel for pixel; images
    without names (an MNIST idx, a MedMNIST npz, whose pixels lie undecoded) are known by pixels
    only. Data that cannot be listed shares nothing here: the loader names what is wrong with it."""
    try:
        listing = data_listing(data_dir, split)
        known = list_items(reference)
    except PurifyLabError:
        return SharedImages([], 0, "")
    listed = len(listing.items)
    if listing.named != known.named:  # a name and a picture are never the same image here
        return SharedImages([], listed, "")
    if not known.named:
        known_pixels = {_pixels_digest(item) for item in known.items} - {None}
        return SharedImages([item.source for item in listing.items if _pixels_digest(item) in known_pixels], listed, "pixel for pixel")
    by_name = {_class_and_name(item.source): item for item in known.items}
    named_alike = [(item, by_name[_class_and_name(item.source)]) for item in listing.items if _class_and_name(item.source) in by_name]
    if Path(reference).is_dir():
        return SharedImages([item.source for item, _ in named_alike], listed, "by file name")
    same = [item.source for item, twin in named_alike if (pixels := _pixels_digest(item)) is not None and pixels == _pixels_digest(twin)]
    return SharedImages(same, listed, "by file name and pixels")


def _pixels_digest(item: Item) -> bytes | None:
    """None for an image that does not decode (or is too large to): it is no one's twin here, and the
    loader skips it with its reason."""
    try:
        image = item.open()
        return hashlib.sha256(f"{image.mode} {image.size}".encode() + image.tobytes()).digest()
    except DECODE_ERRORS:
        return None


def _class_and_name(source: str) -> str:
    return "/".join(PurePosixPath(source).parts[-2:])


def list_items(path: str | Path, split: str | None = None) -> Listing:
    """Detect the layout at `path` and list its items without decoding any pixels."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _list_directory(path, split)
    if path.is_file():
        lister = _file_lister(path)
        if lister is None:
            raise PurifyLabError(_unknown_layout(path))
        return lister(path, split)
    raise PurifyLabError(f"no data at {path}: the path does not exist")


def data_listing(path: str | Path, split: str | None = None) -> Listing:
    """What `core.data.loading.load_split(path, split, ...)` reads, listed without decoding and
    without torch: an unreadable --data is refused in a fraction of a second, before a model is
    built, and class names can be checked before any pixel is decoded. Data that holds splits of
    its own (npz keys, split folders) is listed at `split`, read whole; any other data at once."""
    try:
        listing = list_items(path, None)
    except SplitsInData as error:
        if split not in error.available:
            raise
        listing = list_items(path, split)
    return _with_items(listing)


def _with_items(listing: Listing) -> Listing:
    if not listing.items:
        raise PurifyLabError(f"no images found in {listing.location}; expected {EXPECTED_LAYOUTS}")
    return listing


def _assemble(listing: Listing, decoded: list[Decoded], size: int | None) -> ImageSet:
    import torch

    from core.data.imageset import ImageSet

    kept = [(item, result) for item, result in zip(listing.items, decoded, strict=True) if result.error is None]
    skipped = tuple(item.source for item, result in zip(listing.items, decoded, strict=True) if result.error)
    if not kept:
        raise PurifyLabError(f"no decodable images in {listing.location} ({len(skipped)} files failed to decode)")
    arrays = [result.pixels for _, result in kept]
    if len({a.shape[0] for a in arrays}) > 1:  # grey and colour mixed under channels=None: colour wins
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    shapes = sorted({a.shape[1:] for a in arrays})
    if len(shapes) > 1:
        examples = ", ".join(f"{w}x{h}" for h, w in shapes[:3])
        raise PurifyLabError(f"images in {listing.location} have {len(shapes)} different sizes ({examples}, ...); resize them with --size")
    return ImageSet(
        images=torch.from_numpy(np.stack(arrays)),
        labels=torch.tensor([item.label for item, _ in kept], dtype=torch.int64),
        classes=listing.classes,
        sources=tuple(item.source for item, _ in kept),
        resize=size,
        skipped=skipped,
    )


def load_dataset(
    path: str | Path,
    *,
    split: str | None = None,
    size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    progress: bool = False,
    cache_dir: str | Path | None = None,
) -> ImageSet:
    """Load any supported layout at `path` into an `ImageSet`.

    size: resize every image to size x size (antialiased bilinear) and record it; None keeps the
    native size, which must then be the same for all images. channels: 1 (grey), 3 (RGB) or None
    (grey content stays 1 channel, colour stays 3). limit: at most that many items, spread over
    the classes. cache_dir: keep decoded pixels there (e.g. .data/cache, git-ignored) keyed by the
    file list, sizes and mtimes and the load options, so repeated runs skip decoding; a set with a
    file the system refused to read is not kept, since the refusal may pass (a chmod, a network disk).
    """
    from core.data.cache import read_cache, write_cache

    check_size(size)
    check_channels(channels)
    listing = _with_items(list_items(path, split)).limited(limit)
    image_set = None if cache_dir is None else read_cache(Path(cache_dir), listing, size=size, channels=channels)
    if image_set is None:
        decoded = _decode_all(listing, channels, size, progress)
        image_set = _assemble(listing, decoded, size)
        if cache_dir is not None and not any(result.unreadable for result in decoded):
            write_cache(Path(cache_dir), listing, image_set, size=size, channels=channels)
    if image_set.skipped:  # on every run, a cached one too
        warn(f"skipped {len(image_set.skipped)} undecodable file(s) in {listing.location}, e.g. {image_set.skipped[0]}")
    return image_set


def _decode_all(listing: Listing, channels: int | None, size: int | None, progress: bool) -> list[Decoded]:
    return parallel_map(
        lambda item: decode(item.open, channels=channels, size=size),
        listing.items,
        total=len(listing.items),
        progress=progress,
        description=f"decoding {Path(listing.location).name}",
    )
