"""zoo.sdk.images: every unusable image file is one ImageError naming it; odd modes become RGB."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from zoo.errors import ZooError
from zoo.sdk.images import MAX_IMAGE_PIXELS, ImageError, open_image


@pytest.mark.parametrize(
    ("name", "make", "pixel"),
    [
        ("rgb.png", lambda: Image.new("RGB", (8, 6), (1, 2, 3)), (1, 2, 3)),
        ("rgba.png", lambda: Image.new("RGBA", (8, 6), (255, 0, 0, 0)), (255, 255, 255)),  # transparent -> white
        ("cmyk.jpg", lambda: Image.new("CMYK", (8, 6), (0, 0, 0, 0)), (255, 255, 255)),
        ("palette.png", lambda: Image.new("P", (8, 6), 0), (0, 0, 0)),
        ("grey16.png", lambda: Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)), (255, 255, 255)),
        ("one_by_n.png", lambda: Image.new("L", (1, 300), 7), (7, 7, 7)),
    ],
)
def test_modes_are_converted_to_rgb(tmp_path, name, make, pixel):
    make().save(tmp_path / name)
    image = open_image(tmp_path / name)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == pixel


def test_an_animation_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), (100 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert open_image(tmp_path / "a.gif").getpixel((0, 0)) == (0, 0, 0)


def _truncated(path):
    Image.new("RGB", (64, 64), (9, 9, 9)).save(path.with_suffix(".jpg"), quality=95)
    data = path.with_suffix(".jpg").read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: os.mkfifo(p), "not a regular file"),  # would hang a plain open()
        (lambda p: p.write_text("not an image"), "not an image file"),
        (_truncated, "truncated"),
    ],
)
def test_unusable_files_are_one_error_naming_the_file(tmp_path, make, words):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageError, match=words) as caught:
        open_image(path, what="--image")
    assert isinstance(caught.value, ZooError) and "--image" in str(caught.value) and "bad.png" in str(caught.value)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")  # tiny file, huge canvas
    with pytest.raises(ImageError, match="pixel"):
        open_image(tmp_path / "bomb.png")


def test_a_truncated_file_is_refused_even_where_another_library_made_pil_lenient(tmp_path, monkeypatch):
    """lmms-eval sets PIL's process-wide LOAD_TRUNCATED_IMAGES on import; zoo's checks must not follow it."""
    from PIL import ImageFile

    import zoo

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "cut.png"
    Image.frombytes("RGB", (96, 96), os.urandom(96 * 96 * 3)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 7 // 10])  # the header is whole, the pixels are not
    with pytest.raises(ImageError, match="truncated"):
        open_image(path)
    processor = zoo.build("tiny-clip-mlp-qwen2", meta=True).processor()
    with pytest.raises(ImageError, match=r"images\[0\] .*cut\.png.* is corrupt or truncated"):
        processor("<image> what is it?", images=[Image.open(path)])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is given back
