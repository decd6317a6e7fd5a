import numpy as np
import pytest
from PIL import Image

from classify_job.errors import ImageDecodeError, InputError
from classify_job.imageio import load_image


def save(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_rgb_jpeg_is_resized_and_reports_original_size(tmp_path):
    path = save(tmp_path, "a.jpg", Image.new("RGB", (640, 480), (200, 10, 10)))
    decoded = load_image(path, (32, 48))
    assert decoded.pixels.shape == (32, 48, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height) == (640, 480)
    assert abs(int(decoded.pixels[..., 0].mean()) - 200) < 5


def test_alpha_is_composited_on_white(tmp_path):
    path = save(tmp_path, "a.png", Image.new("RGBA", (10, 10), (0, 0, 0, 0)))
    assert load_image(path, (8, 8)).pixels.min() == 255


def test_palette_with_transparency_and_la_modes(tmp_path):
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([255, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert load_image(save(tmp_path, "p.png", pal, transparency=0), (8, 8)).pixels.min() == 255
    la = Image.new("LA", (10, 10), (50, 255))
    assert load_image(save(tmp_path, "la.png", la), (8, 8)).pixels.max() == 50


def test_sixteen_bit_grayscale_uses_the_full_range(tmp_path):
    arr = np.linspace(0, 65535, 100, dtype=np.uint16).reshape(10, 10)
    path = save(tmp_path, "g16.png", Image.fromarray(arr))
    pixels = load_image(path, (10, 10), "grayscale").pixels
    assert pixels.shape == (10, 10, 1) and pixels.min() == 0 and pixels.max() == 255


def test_cmyk_jpeg_and_grayscale_model_input(tmp_path):
    path = save(tmp_path, "c.jpg", Image.new("CMYK", (20, 20), (0, 255, 255, 0)))
    assert load_image(path, (8, 8)).pixels.shape == (8, 8, 3)
    assert load_image(path, (8, 8), "grayscale").pixels.shape == (8, 8, 1)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = save(tmp_path, "r.jpg", img, exif=exif.tobytes())
    decoded = load_image(path, (16, 16))
    assert (decoded.width, decoded.height) == (20, 40)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"not an image at all", "not a recognised image format"), (b"", "not a recognised image format")],
)
def test_garbage_raises_a_one_line_decode_error(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(path, (8, 8))


def test_truncated_jpeg_is_a_decode_error(tmp_path):
    path = save(tmp_path, "t.jpg", Image.effect_noise((200, 200), 50).convert("RGB"))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, (8, 8))
    assert "\n" not in str(info.value)


def test_unknown_color_mode_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="Received: 'cmyk'"):
        load_image(tmp_path / "x.jpg", (8, 8), "cmyk")
