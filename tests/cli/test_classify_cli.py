import json
import subprocess
import sys

from checkout_cam.cli import main


def test_json_lines_for_real_photos(random_artifact, grocery_images, capsys):
    rc = main(["classify", "--model", str(random_artifact), "--json", *map(str, grocery_images[:3])])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 3
    for line, path in zip(out, grocery_images):
        obj = json.loads(line)
        assert obj["image"] == str(path) and obj["trained"] is False
        assert len(obj["top"]) == 3
        assert set(obj["top"][0]) == {"index", "label", "prob"}
        assert obj["top"][0]["prob"] >= obj["top"][1]["prob"] >= obj["top"][2]["prob"]


def test_readable_output_says_untrained(random_artifact, grocery_images, capsys):
    rc = main(["classify", "--model", str(random_artifact), "--top", "2", str(grocery_images[0])])
    out = capsys.readouterr().out
    assert rc == 0 and "UNTRAINED" in out and " 1. " in out and " 2. " in out and " 3. " not in out


def test_bad_files_do_not_stop_the_others(random_artifact, grocery_images, tmp_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    rc = main(["classify", "--model", str(random_artifact), "--json", str(tmp_path / "missing.jpg"),
               str(empty), str(grocery_images[0]), str(text)])
    cap = capsys.readouterr()
    assert rc == 1
    assert [json.loads(l)["image"] for l in cap.out.splitlines()] == [str(grocery_images[0])]
    errors = [l for l in cap.err.splitlines() if ": error: " in l]
    assert len(errors) == 3
    assert "missing.jpg: file not found" in errors[0]
    assert "empty.jpg: file is empty" in errors[1]
    assert "notes.jpg: not an image file" in errors[2]


def test_missing_model_says_how_to_make_one(tmp_path, capsys):
    rc = main(["classify", "--model", str(tmp_path / "none.pt"), "x.jpg"])
    err = capsys.readouterr().err
    assert rc == 2 and "export-model" in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_and_help():
    out = subprocess.run([sys.executable, "-m", "checkout_cam", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("export-model", "classify", "validate-config"):
        assert cmd in out.stdout


def test_an_empty_folder_is_an_error_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    rc = main(["classify", "--model", str(tmp_path / "no-model.pt"), str(tmp_path / "photos")])
    err = capsys.readouterr().err
    assert rc == 2 and "no images found in" in err and "model" not in err.split("error:")[1][:40]
