import struct
import zlib

import numpy as np
import pytest

from checkout_cam.errors import ImageReadError
from checkout_cam.images import list_images, read_image


def _png_header_only(path, width, height):
    """A PNG whose header claims huge dimensions: must be refused without decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_reads_real_photo_as_bgr(grocery_images):
    img = read_image(grocery_images[0])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@pytest.mark.parametrize("case", ["missing", "empty", "text", "dir", "truncated"])
def test_bad_files_raise_one_line(tmp_path, grocery_images, case):
    p = tmp_path / "x.jpg"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("not an image")
    elif case == "dir":
        p.mkdir()
    elif case == "truncated":
        p.write_bytes(grocery_images[0].read_bytes()[:200])
    with pytest.raises(ImageReadError) as exc:
        read_image(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 100_000, 100_000)
    with pytest.raises(ImageReadError, match="refused"):
        read_image(bomb)
    big = tmp_path / "big.png"
    _png_header_only(big, 8000, 8000)
    with pytest.raises(ImageReadError, match="64,000,000 pixels|8000x8000 is more than"):
        read_image(big, max_pixels=50_000_000)


def test_list_images_expands_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "2.PNG").write_bytes(b"x")
    assert list_images([tmp_path]) == [tmp_path / "2.PNG", tmp_path / "a" / "1.jpg"]
    assert list_images([tmp_path / "given.txt"]) == [tmp_path / "given.txt"]
