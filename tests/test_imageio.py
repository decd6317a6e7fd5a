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


def test_a_camera_resolution_jpeg_decodes_through_draft_mode(tmp_path):
    # 9504x6336 (60 Mpx): over the decode limit at full size, 1188x792 after an 1/8 draft.
    img = Image.new("RGB", (9504, 6336), (30, 90, 160))
    path = save(tmp_path, "camera.jpg", img, quality=50)
    del img
    decoded = load_image(path, (224, 224))
    assert (decoded.width, decoded.height) == (9504, 6336)
    assert abs(int(decoded.pixels[..., 2].mean()) - 160) < 5


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_decode_with_their_exif_rotation(tmp_path, fmt):
    from classify_job.imageio import open_image  # registers the HEIF plugin

    with open_image(save(tmp_path, "seed.png", Image.new("RGB", (2, 2)))):
        pass
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # stored sideways: left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path, f"phone.{fmt.lower()}", Image.fromarray(arr), format=fmt, exif=exif.tobytes())
    decoded = load_image(path, (40, 20))
    assert (decoded.width, decoded.height) == (20, 40)
    top, bottom = decoded.pixels[:20, :, 0].mean(), decoded.pixels[20:, :, 0].mean()
    assert top > 200 and bottom < 50  # upright: the red half is on top


def test_a_path_longer_than_path_max_decodes(tmp_path):
    import os

    directory = tmp_path
    while len(str(directory)) < 4000:
        directory = directory / ("d" * 200)
        directory.mkdir()
    Image.new("RGB", (10, 10), (0, 200, 0)).save(directory / "x.png")
    name = "f" * 240 + ".png"
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    os.rename("x.png", name, src_dir_fd=fd, dst_dir_fd=fd)  # the whole path is too long for rename()
    os.close(fd)
    long_path = f"{directory}/{name}"
    assert len(long_path) > 4096
    assert load_image(long_path, (4, 4)).pixels[..., 1].min() > 190


BOMB_CHECK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from classify_job.errors import ImageDecodeError
from classify_job.imageio import load_image
for path in sys.argv[1:]:
    try:
        load_image(path, (224, 224))
        print("decoded", path)
    except ImageDecodeError as exc:
        print("error", path, exc)
"""


def test_decompression_bombs_are_error_rows_under_a_1_gib_limit(tmp_path):
    import subprocess
    import sys

    files = [write(tmp_path, name, data) for name, data in bombs().items()]
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_CHECK, *map(str, files)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(files) and all(line.startswith("error") for line in lines), lines


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _png(width: int, height: int, chunks: bytes = b"", rows: int = 4) -> bytes:
    """A PNG header declaring width x height, extra chunks, and the first ``rows`` rows of data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * (rows * (3 * width + 1)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunks + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _ztxt_bomb() -> bytes:
    import struct
    import zlib

    text = zlib.compress(b"a" * (300 << 20), 9)  # 300 MB of text in ~300 KB
    body = b"Comment\0\0" + text
    crc = struct.pack(">I", zlib.crc32(b"zTXt" + body))
    return _png(64, 64, struct.pack(">I", len(body)) + b"zTXt" + body + crc)


def _tiff(width: int, height: int) -> bytes:
    import struct

    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height)]  # fmt: skip
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries
    )
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"


def _gif(width: int, height: int) -> bytes:
    import struct

    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;"
    return b"GIF89a" + screen + image


def bombs() -> dict[str, bytes]:
    return {
        "huge.png": _png(40000, 40000),
        "text_bomb.png": _ztxt_bomb(),
        "huge.tif": _tiff(60000, 60000),
        "huge.gif": _gif(65535, 65535),
    }
