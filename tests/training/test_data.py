import shutil

import pytest

from checkout_cam.training.data import (
    DataError, load_labeled, read_classes, read_coarse_map, read_samples, split_holdout, square_rgb, write_list)

CSV_HEADER = "Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int)\n"


def test_folder_classes_are_sorted_subfolders(photo_sets):
    train, _ = photo_sets
    data = load_labeled(train)
    assert data.classes == ["Arla-Standard-Milk", "Banana", "Cucumber"]
    assert data.counts() == [4, 4, 4]
    assert all(s.path.parent.name == data.classes[s.label] for s in data.samples)


def test_fingerprint_is_stable_and_sees_a_relabelled_photo(photos):
    train, _ = photos
    before = load_labeled(train).fingerprint()
    assert load_labeled(train).fingerprint() == before
    assert before["images"] == 12 and before["classes"] == 3 and len(before["sha256"]) == 64
    moved = next((train / "Banana").iterdir())
    shutil.move(moved, train / "Cucumber" / moved.name)
    assert load_labeled(train).fingerprint()["sha256"] != before["sha256"]


def _list_setup(tmp_path, photo_sets, lines=None):
    train, _ = photo_sets
    shutil.copytree(train, tmp_path / "imgs")
    csv = tmp_path / "classes.csv"
    csv.write_text(CSV_HEADER + "Banana,0,Fruit,0\nArla-Standard-Milk,1,Milk,1\nCucumber,2,Vegetable,2\n")
    ids = {"Banana": 0, "Arla-Standard-Milk": 1, "Cucumber": 2}
    if lines is None:
        lines = [f"imgs/{p.parent.name}/{p.name}, {ids[p.parent.name]}, 9"
                 for p in sorted((tmp_path / "imgs").rglob("*.jpg"))]
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    # Paths are relative to the list file's folder.
    listing.write_text("".join(f"../{ln}\n" for ln in lines))
    return listing, csv


def test_list_file_with_classes_csv(tmp_path, photo_sets):
    listing, csv = _list_setup(tmp_path, photo_sets)
    data = load_labeled(listing, csv)
    assert data.classes == ["Banana", "Arla-Standard-Milk", "Cucumber"]   # ordered by id
    assert data.counts() == [4, 4, 4]
    assert read_classes(csv) == {0: "Banana", 1: "Arla-Standard-Milk", 2: "Cucumber"}
    assert read_coarse_map(csv)["Cucumber"] == "Vegetable"


def test_missing_listed_file_is_named(tmp_path, photo_sets):
    listing, csv = _list_setup(tmp_path, photo_sets)
    listing.write_text(listing.read_text() + "../imgs/Banana/not-there.jpg, 0\n")
    with pytest.raises(DataError, match=r"1 listed file\(s\) do not exist: .*imgs/Banana/not-there\.jpg"):
        load_labeled(listing, csv)


def test_class_id_out_of_range_names_file_and_line(tmp_path, photo_sets):
    listing, csv = _list_setup(tmp_path, photo_sets)
    lines = listing.read_text().splitlines()
    lines[2] = lines[2].replace(", 0, 9", ", 7, 9").replace(", 1, 9", ", 7, 9").replace(", 2, 9", ", 7, 9")
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.txt line 3: class id 7 is out of range"):
        load_labeled(listing, csv)


def test_malformed_line_and_missing_csv_and_list_without_classes(tmp_path, photo_sets):
    listing, csv = _list_setup(tmp_path, photo_sets)
    with pytest.raises(DataError, match=r"classes file not found: .*nope\.csv"):
        load_labeled(listing, tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"train\.txt is a list file: name its classes with --classes"):
        load_labeled(listing)
    listing.write_text("../imgs/Banana/x.jpg; 0\n")
    with pytest.raises(DataError, match=r"train\.txt line 1: expected `path, class_id"):
        load_labeled(listing, csv)
    csv.write_text("Banana,0\nApple,0\n")
    with pytest.raises(DataError, match=r"classes\.csv line 2: class id 0 is used twice"):
        read_classes(csv)


def test_empty_class_folder_is_named(photos):
    train, _ = photos
    (train / "Kiwi").mkdir()
    with pytest.raises(DataError, match=r"1 class\(es\) have no usable images: Kiwi"):
        load_labeled(train)
    # Evaluation data may lack classes.
    assert load_labeled(train, require_every_class=False).counts()[-1] == 0


def test_missing_data_and_unknown_folder(tmp_path, photos):
    with pytest.raises(DataError, match=r"data not found: .*nowhere"):
        load_labeled(tmp_path / "nowhere")
    train, _ = photos
    with pytest.raises(DataError, match=r"folder\(s\) Banana are not known classes"):
        load_labeled(train, known_classes=["Arla-Standard-Milk", "Cucumber"])


def test_unreadable_image_is_skipped_and_counted(photos):
    train, _ = photos
    (train / "Banana" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = load_labeled(train)
    assert len(data.samples) == 13
    decoded = read_samples(data, square_rgb(40, 32), progress=False)
    assert decoded.images.shape == (12, 3, 32, 32)
    assert len(decoded.skipped) == 1 and "broken.jpg" in decoded.skipped[0]
    assert decoded.labels.tolist() == [data.samples[i].label for i in decoded.kept]


def test_holdout_is_stratified_seeded_and_round_trips(tmp_path, photo_sets):
    train, _ = photo_sets
    data = load_labeled(train)
    fit, held = split_holdout(data, 0.25, seed=3)
    assert held.counts() == [1, 1, 1] and fit.counts() == [3, 3, 3]
    assert split_holdout(data, 0.25, seed=3)[1].samples == held.samples
    assert not {s.path for s in fit.samples} & {s.path for s in held.samples}
    listing = write_list(held, tmp_path / "out" / "m.val.txt")
    again = load_labeled(listing, known_classes=data.classes, require_every_class=False)
    assert [(s.path.resolve(), s.label) for s in again.samples] == [(s.path.resolve(), s.label)
                                                                    for s in held.samples]


def test_real_grocery_lists(grocery):
    classes = grocery / "classes.csv"
    train = load_labeled(grocery / "train.txt", classes)
    assert len(train.samples) == 2640 and len(train.classes) == 81 and min(train.counts()) > 0
    # The grocery val split covers only some classes: fine for evaluation, not for training.
    with pytest.raises(DataError, match=r"val\.txt: 21 class\(es\) have no usable images"):
        load_labeled(grocery / "val.txt", classes)
    val = load_labeled(grocery / "val.txt", classes, require_every_class=False)
    assert len(val.samples) == 296 and val.classes == train.classes
    assert sum(n > 0 for n in val.counts()) == 60
    assert len(set(read_coarse_map(classes).values())) > 30
