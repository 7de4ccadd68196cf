"""Labelled product photos: an ImageFolder-style directory or a list file, checked and fingerprinted.

Two layouts are accepted, both common for store photo collections:

* a directory with one sub-folder per class (images found recursively inside
  each class folder, like torchvision's ImageFolder);
* a list file of ``path, class_id[, ...]`` lines, paths relative to the list
  file's folder (absolute paths also work), with a classes CSV naming the ids
  (``name, id, ...`` as in the grocery data set's classes.csv).

Problems are reported by path as one DataError (missing files, an empty class,
an id the CSV does not know); an image that exists but cannot be decoded is
skipped and counted, because one bad JPEG in thousands should not stop a
training run.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from checkout_cam.errors import CheckoutCamError, ImageReadError
from checkout_cam.images import IMAGE_SUFFIXES, read_image
from checkout_cam.preprocess import Preprocessor

logger = logging.getLogger(__name__)

MAX_LISTED = 5   # bad paths named in one error message; the count says how many more


class DataError(CheckoutCamError):
    """A training or evaluation data set cannot be used as given."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int          # index into LabeledImages.classes


@dataclass
class LabeledImages:
    """Image paths with class indices, and the class names those indices mean."""

    source: Path        # the directory or list file the user named
    root: Path          # folder the sample paths are reported relative to
    classes: list[str]
    samples: list[Sample]

    def counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for s in self.samples:
            counts[s.label] += 1
        return counts

    def relpath(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def fingerprint(self) -> dict:
        """sha256 over the sorted (relative path, class name, file size) triples.

        Cheap (no image is read) yet changes when a photo is added, removed,
        relabelled or replaced by one of another size, so a model's metadata
        says which data it was trained on and resume can refuse other data.
        """
        rows = sorted(f"{self.relpath(s.path)}\t{self.classes[s.label]}\t{s.path.stat().st_size}"
                      for s in self.samples)
        digest = hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()
        return {"source": str(self.source), "images": len(self.samples),
                "classes": len(self.classes), "sha256": digest}

    def subset(self, indices: Sequence[int]) -> "LabeledImages":
        return LabeledImages(self.source, self.root, self.classes, [self.samples[i] for i in indices])


def _listed(paths: Sequence[object]) -> str:
    shown = ", ".join(str(p) for p in paths[:MAX_LISTED])
    more = len(paths) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------- classes CSV

def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a CSV file, blank lines dropped, header (non-integer id) dropped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f), 1)
                    if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise DataError(f"classes file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read classes file {path}: {exc}") from None
    if rows and (len(rows[0][1]) < 2 or not _is_int(rows[0][1][1])):
        rows = rows[1:]
    if not rows:
        raise DataError(f"classes file {path} lists no classes: put one `name, id` line per class")
    return rows


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_classes(path: str | Path) -> dict[int, str]:
    """Class id -> name from a CSV of ``name, id, ...`` rows (a header line is allowed), sorted by id."""
    path = Path(path)
    by_id: dict[int, str] = {}
    seen: dict[str, int] = {}
    for line, row in _csv_rows(path):
        if len(row) < 2 or not row[0] or not _is_int(row[1]):
            raise DataError(f"{path} line {line}: expected `name, id`, got {','.join(row)!r}")
        name, cid = row[0], int(row[1])
        if cid in by_id:
            raise DataError(f"{path} line {line}: class id {cid} is used twice ({by_id[cid]!r} and {name!r})")
        if name in seen:
            raise DataError(f"{path} line {line}: class name {name!r} is used twice (ids {seen[name]} and {cid})")
        by_id[cid] = name
        seen[name] = cid
    return dict(sorted(by_id.items()))


def read_coarse_map(path: str | Path) -> dict[str, str]:
    """Fine class name -> coarse class name from a CSV of ``fine, fine_id, coarse, ...`` rows."""
    path = Path(path)
    mapping: dict[str, str] = {}
    for line, row in _csv_rows(path):
        if len(row) < 3 or not row[0] or not row[2]:
            raise DataError(f"{path} line {line}: expected `fine name, fine id, coarse name, ...` "
                            f"(the layout of grocery/classes.csv), got {','.join(row)!r}")
        mapping[row[0]] = row[2]
    return mapping


# ---------------------------------------------------------------- data sets

def load_labeled(spec: str | Path, classes_csv: str | Path | None = None,
                 known_classes: Sequence[str] | None = None,
                 require_every_class: bool = True) -> LabeledImages:
    """Read a class-folder directory or a list file into LabeledImages, checking it on the way.

    Without a classes CSV, ``known_classes`` is the class list: a list file's
    ids index it (evaluate passes the model's labels, the numbering of the
    list finetune writes) and a folder's sub-folders must be among its names
    (a validation folder may lack some training classes). Otherwise a folder's
    classes are its sub-folder names, sorted. ``require_every_class`` makes a
    class without images an error (training); evaluation only needs some.
    """
    spec = Path(spec)
    if not spec.exists():
        raise DataError(f"data not found: {spec} (give a folder with one sub-folder per class, "
                        f"or a list file of `path, class_id` lines)")
    if spec.is_dir():
        names = list(read_classes(classes_csv).values()) if classes_csv else known_classes
        data = _from_folder(spec, None if names is None else list(names))
    else:
        if classes_csv:
            id_to_name = read_classes(classes_csv)
        elif known_classes is not None:
            id_to_name = dict(enumerate(known_classes))
        else:
            raise DataError(f"{spec} is a list file: name its classes with --classes CSV "
                            f"(`name, id` per line, like grocery/classes.csv)")
        data = _from_list(spec, id_to_name)
    if not data.samples:
        raise DataError(f"{spec}: no images found")
    if require_every_class:
        check_every_class(data)
    return data


def load_many(specs: Sequence[str | Path], classes_csv: str | Path | None = None) -> LabeledImages:
    """Several training sets as one (``--train photos/ --train corrections/``), classes joined by name.

    The classes are the first set's, in its order, then each further set's new names (sorted, as a
    folder's are): a product photographed at the counter and corrected by the attendant is one class.
    ``classes_csv`` names the ids of list files; folders keep their own sub-folder names.
    """
    if len(specs) == 1:
        return load_labeled(specs[0], classes_csv)
    sets = [load_labeled(spec, None if Path(spec).is_dir() else classes_csv, require_every_class=False)
            for spec in specs]
    classes: list[str] = []
    for d in sets:
        classes.extend(c for c in d.classes if c not in classes)
    index = {name: i for i, name in enumerate(classes)}
    samples = [Sample(s.path, index[d.classes[s.label]]) for d in sets for s in d.samples]
    root = Path(os.path.commonpath([str(d.root.resolve()) for d in sets]))
    merged = LabeledImages(Path(" + ".join(str(d.source) for d in sets)), root, classes, samples)
    check_every_class(merged)
    return merged


def check_every_class(data: LabeledImages) -> None:
    empty = [name for name, n in zip(data.classes, data.counts()) if n == 0]
    if empty:
        raise DataError(f"{data.source}: {len(empty)} class(es) have no usable images: {_listed(empty)}; "
                        f"add photos or remove the class")


def _from_folder(root: Path, known: list[str] | None) -> LabeledImages:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not folders:
        raise DataError(f"{root}: no class folders; put each class's photos in its own sub-folder "
                        f"({root}/<class name>/*.jpg)")
    if loose:
        logger.warning("%s: %d image(s) directly in the data folder belong to no class and are ignored "
                       "(e.g. %s)", root, len(loose), loose[0])
    names = [p.name for p in folders]
    if known is not None:
        classes = known
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{root}: folder(s) {_listed(unknown)} are not known classes (known: "
                            f"{_listed(classes)}); name the folders like the training classes")
    else:
        classes = names
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for folder in folders:
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        samples.extend(Sample(f, index[folder.name]) for f in files)
    return LabeledImages(root, root, classes, samples)


def _from_list(path: Path, id_to_name: dict[int, str]) -> LabeledImages:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read list file {path}: {exc}") from None
    ids = list(id_to_name)
    index = {cid: i for i, cid in enumerate(ids)}
    base = path.parent
    samples, missing = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0] or not _is_int(parts[1]):
            raise DataError(f"{path} line {n}: expected `path, class_id[, ...]`, got {line.strip()!r}")
        cid = int(parts[1])
        if cid not in index:
            raise DataError(f"{path} line {n}: class id {cid} is out of range (known ids: "
                            f"{ids[0]}..{ids[-1]}, {len(ids)} classes)")
        file = base / parts[0]
        if not file.is_file():
            missing.append(file)
            continue
        samples.append(Sample(file, index[cid]))
    if missing:
        raise DataError(f"{path}: {len(missing)} listed file(s) do not exist: {_listed(missing)}")
    return LabeledImages(path, base, list(id_to_name.values()), samples)


def split_holdout(data: LabeledImages, share: float, seed: int) -> tuple[LabeledImages, LabeledImages]:
    """Stratified (per class) random split into (train, held-out), fixed by ``seed``.

    Every class with at least two photos gives at least one to the held-out
    part, so per-class accuracy covers it; a class with one photo keeps it for
    training.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(data.samples):
        by_class.setdefault(s.label, []).append(i)
    train, held = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        k = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(len(idx) * share)))
        held.extend(idx[:k])
        train.extend(idx[k:])
    return data.subset(sorted(train)), data.subset(sorted(held))


def write_list(data: LabeledImages, path: str | Path) -> Path:
    """Write a list file (paths relative to its own folder, class index as id) evaluate can read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{os.path.relpath(s.path.resolve(), path.parent.resolve())}, {s.label}" for s in data.samples]
    header = ("# held out by `checkout-cam finetune` for validation; ids are the model's class "
              "indices:\n# " + ", ".join(f"{i}={n}" for i, n in enumerate(data.classes)) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- decoding

@dataclass
class DecodedImages:
    """Decoded, resized images kept in memory as one uint8 RGB tensor (N, 3, H, W)."""

    images: torch.Tensor
    labels: torch.Tensor        # int64 (N,)
    kept: list[int]             # sample indices the rows come from
    skipped: list[str]          # one message per unreadable image, naming its path


def read_samples(data: LabeledImages, transform: Callable[[np.ndarray], torch.Tensor],
                 max_pixels: int = 50_000_000, desc: str = "decode",
                 progress: bool = True) -> DecodedImages:
    """Decode every sample once through ``transform`` (BGR array -> (3, H, W) uint8 tensor).

    Unreadable images are skipped, each logged by path, and counted in
    ``skipped``; decoding runs on a few threads because OpenCV and torch's
    resize release the GIL.
    """
    def one(i: int) -> torch.Tensor | str:
        try:
            return transform(read_image(data.samples[i].path, max_pixels))
        except ImageReadError as exc:
            return str(exc)

    n = len(data.samples)
    out: torch.Tensor | None = None
    kept, skipped = [], []
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(one, range(n))
        for i, res in enumerate(tqdm(results, total=n, desc=desc, unit="img", leave=False,
                                     disable=not progress, dynamic_ncols=True)):
            if isinstance(res, str):
                logger.warning("skipping unreadable image: %s", res)
                skipped.append(res)
                continue
            if out is None:
                out = torch.empty((n, *res.shape), dtype=torch.uint8)
            out[len(kept)] = res
            kept.append(i)
    if not kept:
        raise DataError(f"{data.source}: none of the {n} images could be read")
    labels = torch.tensor([data.samples[i].label for i in kept], dtype=torch.int64)
    return DecodedImages(out[:len(kept)].clone() if len(kept) < n else out, labels, kept, skipped)


def square_rgb(resize: int, crop: int) -> Callable[[np.ndarray], torch.Tensor]:
    """BGR image -> RGB uint8 (3, crop, crop): the inference resize + centre crop (Preprocessor)."""
    pre = Preprocessor(resize=resize, crop=crop)

    def transform(image: np.ndarray) -> torch.Tensor:
        return pre.crop_uint8(image).flip(0).contiguous()
    return transform
