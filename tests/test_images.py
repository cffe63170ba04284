"""Safe decoding: every awkward kind of input becomes RGB or a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mimicry import images
from mimicry.images import ImageBytes, ImageError, load_image


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (80, 40), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 40, 40))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (40, 80)
    top = np.asarray(out)[5, 20]
    assert top[2] > 200 and top[0] < 60  # the blue half is now on top


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "L", "CMYK", "1"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (30, 20), (10, 200, 30)).convert(mode)
    ext = "tif" if mode == "CMYK" else "png"
    path = tmp_path / f"img.{ext}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (30, 20)


def test_alpha_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    path = tmp_path / "clear.png"
    img.save(path)
    assert np.asarray(load_image(path)).min() == 255


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (64, 64, 3)
    assert out.max() >= 250 and out.min() <= 5  # full range kept, not saturated


def test_animated_takes_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    out = np.asarray(load_image(path))
    assert out[8, 8, 0] > 200 and out[8, 8, 1] < 50


def test_decompression_bomb_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 400)).save(path)
    monkeypatch.setenv("MIMICRY_MAX_PIXELS", str(100 * 100))
    with pytest.raises(ImageError, match="decompression bomb") as err:
        load_image(path)
    assert str(path) in str(err.value) and "400x400" in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50 * 50)  # Pillow's own guard stays on too
    monkeypatch.setenv("MIMICRY_MAX_PIXELS", str(10**9))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)


def test_file_size_limit(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (50, 50)).save(path)
    monkeypatch.setenv("MIMICRY_MAX_FILE_BYTES", "10")
    with pytest.raises(ImageError, match="10-byte limit"):
        load_image(path)
    with pytest.raises(ImageError, match="10-byte limit") as err:
        load_image(ImageBytes("upload.png", path.read_bytes()))
    assert err.value.path == "upload.png"


def test_bytes_decode_like_files_and_hash_the_same(tmp_path):
    path = tmp_path / "a.jpg"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(path, quality=90)
    from_file = images.decode(path, draft_size=224)
    from_bytes = images.decode(ImageBytes("x.jpg", path.read_bytes()), draft_size=224)
    assert from_file.sha256 == from_bytes.sha256 == images.sha256_file(path)
    assert np.array_equal(np.asarray(from_file.image), np.asarray(from_bytes.image))
    assert min(from_file.image.size) >= 224  # drafted, never below the asked size
    with pytest.raises(ImageError, match="empty") as err:
        load_image(ImageBytes("nothing.png", b""))
    assert err.value.path == "nothing.png" and err.value.code == "bad_image"


def test_expand_inputs_walks_folders_and_passes_bytes_through(tmp_path):
    (tmp_path / "d" / ".hidden").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "notes.txt", ".x.png"):
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / "d" / ".hidden" / "c.png").write_bytes(b"x")
    upload = ImageBytes("u.png", b"x")
    got = images.expand_inputs([tmp_path / "d", upload, tmp_path / "d" / "a.jpg"])
    assert got == [tmp_path / "d" / "a.jpg", tmp_path / "d" / "b.png", upload]


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.png", b"", "empty"),
        ("text.jpg", b"this is not an image", "not a recognised image"),
    ],
)
def test_unreadable_files_named_with_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as err:
        load_image(path)
    assert err.value.path == str(path)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.png")
