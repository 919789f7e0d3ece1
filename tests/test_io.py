from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coolchic_pl.io import FrameData, FrameFormatError, count_yuv_frames, parse_yuv_name, read_frame, write_frame

IMAGES = ["kodim15_192x128.png", "kodim15_192x128_01p_yuv420_8b.yuv", "kodim15_192x128_01p_yuv420_10b.yuv"]


def _samples(frame: FrameData) -> list[np.ndarray]:
    return [np.round(p.numpy() * frame.max_value).astype(np.int64) for p in frame.planes]


def _assert_same(a: FrameData, b: FrameData) -> None:
    assert (a.color_space, a.bitdepth) == (b.color_space, b.bitdepth)
    for x, y in zip(_samples(a), _samples(b)):
        np.testing.assert_array_equal(x, y)


def test_png_reads_as_normalised_rgb(kodim15: Path) -> None:
    frame = read_frame(kodim15)
    assert frame.planes[0].shape == (1, 3, 128, 192) and frame.bitdepth == 8 and frame.color_space == "rgb"
    pixels = np.asarray(Image.open(kodim15))
    np.testing.assert_allclose(frame.planes[0][0].permute(1, 2, 0).numpy() * 255, pixels, atol=1e-4)


@pytest.mark.parametrize("extension, options", [
    (".jpg", {"quality": 90}), (".webp", {"lossless": True}), (".tif", {}), (".bmp", {}), (".gif", {}),
])
def test_any_8_bit_rgb_image_pillow_reads_is_read(kodim15: Path, tmp_path: Path, extension: str,
                                                   options: dict) -> None:
    path = tmp_path / f"photo{extension}"
    Image.open(kodim15).save(path, **options)
    frame = read_frame(path)
    assert (frame.color_space, frame.bitdepth, frame.height, frame.width) == ("rgb", 8, 128, 192)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(_samples(frame)[0][0].transpose(1, 2, 0), pixels)


@pytest.mark.parametrize("name", IMAGES)
def test_every_shared_image_round_trips(data_dir: Path, tmp_path: Path, name: str) -> None:
    source = data_dir / "images" / name
    frame = read_frame(source)
    copy = tmp_path / name
    write_frame(frame, copy)
    _assert_same(read_frame(copy), frame)
    if source.suffix == ".yuv":
        assert copy.read_bytes() == source.read_bytes()


def test_yuv420_planes_and_10_bit_scaling(data_dir: Path) -> None:
    eight = read_frame(data_dir / "images" / "kodim15_192x128_01p_yuv420_8b.yuv")
    ten = read_frame(data_dir / "images" / "kodim15_192x128_01p_yuv420_10b.yuv")
    assert [tuple(p.shape) for p in ten.planes] == [(1, 1, 128, 192), (1, 1, 64, 96), (1, 1, 64, 96)]
    assert ten.bitdepth == 10 and eight.bitdepth == 8
    # Same picture at two depths: normalised values agree to within 8-bit precision.
    for p8, p10 in zip(eight.planes, ten.planes):
        assert (p8 - p10).abs().max() < 2 / 255


def test_rgb_formats_round_trip_at_8_10_and_16_bits(kodim15: Path, tmp_path: Path) -> None:
    rgb8 = read_frame(kodim15)
    for bitdepth in (8, 10, 16):
        samples = torch.round(rgb8.planes[0] * (2**bitdepth - 1)) / (2**bitdepth - 1)
        frame = FrameData((samples,), bitdepth, "rgb")
        for suffix in (".png", ".ppm"):
            path = tmp_path / f"image{bitdepth}{suffix}"
            write_frame(frame, path)
            _assert_same(read_frame(path), frame)
    assert (tmp_path / "image16.ppm").read_bytes().startswith(b"P6\n192 128\n65535\n")


def test_yuv444_round_trip(data_dir: Path, tmp_path: Path) -> None:
    yuv420 = read_frame(data_dir / "images" / "kodim15_192x128_01p_yuv420_10b.yuv")
    chroma = [p.repeat_interleave(2, -1).repeat_interleave(2, -2) for p in yuv420.planes[1:]]
    frame = FrameData((torch.cat([yuv420.planes[0], *chroma], dim=1),), 10, "yuv444")
    path = tmp_path / "kodim15_192x128_yuv444_10b.yuv"
    write_frame(frame, path)
    assert path.stat().st_size == 192 * 128 * 3 * 2
    _assert_same(read_frame(path), frame)


def test_video_frames(data_dir: Path) -> None:
    video = data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
    assert count_yuv_frames(video) == 5
    first, last = read_frame(video, 0), read_frame(video, 4)
    assert first.height == 128 and first.width == 224
    assert not torch.equal(first.planes[0], last.planes[0])
    with pytest.raises(FrameFormatError, match="frame 5 requested but the file holds 5"):
        read_frame(video, 5)


def test_yuv_name_parsing() -> None:
    fmt = parse_yuv_name("D-BQSquare_224x128_60p_yuv420_8b.yuv")
    assert (fmt.width, fmt.height, fmt.color_space, fmt.bitdepth) == (224, 128, "yuv420", 8)
    assert parse_yuv_name("a_16x8_yuv444_10b.yuv").frame_bytes == 16 * 8 * 3 * 2
    assert parse_yuv_name("a_15x9_420_8b.yuv").frame_bytes == 15 * 9 + 2 * 8 * 5


def _bad_inputs(data_dir: Path, tmp: Path) -> list[tuple[Path, str]]:
    png = data_dir / "images" / "kodim15_192x128.png"
    yuv = data_dir / "images" / "kodim15_192x128_01p_yuv420_8b.yuv"
    rgb = Image.open(png)
    rgb.convert("L").save(tmp / "gray.png")
    rgb.convert("RGBA").save(tmp / "rgba.png")
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "truncated.png").write_bytes(png.read_bytes()[:2000])
    (tmp / "notpng.png").write_bytes(b"GIF89a" + bytes(100))
    (tmp / "short_192x128_yuv420_8b.yuv").write_bytes(yuv.read_bytes()[:-7])
    (tmp / "empty_192x128_yuv420_8b.yuv").write_bytes(b"")
    (tmp / "nosize_yuv420_8b.yuv").write_bytes(yuv.read_bytes())
    (tmp / "nodepth_192x128_yuv420.yuv").write_bytes(yuv.read_bytes())
    (tmp / "short.ppm").write_bytes(b"P6\n4 4\n255\n" + bytes(10))
    (tmp / "ascii.ppm").write_bytes(b"P3\n1 1\n255\n0 0 0\n")
    (tmp / "tiny.jpg").write_bytes(b"\xff\xd8\xff")
    rgb.save(tmp / "whole.jpg")
    (tmp / "photo.jpg").write_bytes((tmp / "whole.jpg").read_bytes()[:3000])
    (tmp / "notes.txt").write_text("not an image")
    rgb.convert("L").save(tmp / "gray.jpg")
    rgb.convert("CMYK").save(tmp / "cmyk.jpg")
    translucent = rgb.convert("RGBA")
    translucent.putalpha(128)
    translucent.save(tmp / "rgba.webp", lossless=True)
    return [
        (tmp / "missing.png", "no such file"),
        (tmp / "photo.jpg", "corrupt image"),
        (tmp / "tiny.jpg", "not an image format Pillow reads"),
        (tmp / "notes.txt", "not an image format Pillow reads"),
        (tmp / "gray.jpg", "JPEG image in mode L is not supported: convert it to 8-bit RGB"),
        (tmp / "cmyk.jpg", "mode CMYK is not supported"),
        (tmp / "rgba.webp", "WEBP image in mode RGBA is not supported"),
        (tmp / "gray.png", "grayscale PNG is not supported"),
        (tmp / "rgba.png", "RGBA PNG is not supported"),
        (tmp / "empty.png", "file is empty"),
        (tmp / "truncated.png", "corrupt PNG"),
        (tmp / "notpng.png", "not a PNG file"),
        (tmp / "short_192x128_yuv420_8b.yuv", "is not a whole number of 192x128 yuv420 8-bit frames"),
        (tmp / "empty_192x128_yuv420_8b.yuv", "file is empty"),
        (tmp / "nosize_yuv420_8b.yuv", "needs a _<W>x<H>_ token"),
        (tmp / "nodepth_192x128_yuv420.yuv", "bit-depth token"),
        (tmp / "short.ppm", "payload is 10 bytes, expected 48"),
        (tmp / "ascii.ppm", "not a binary PPM"),
    ]


def test_bad_inputs_raise_one_clear_error(data_dir: Path, tmp_path: Path) -> None:
    for path, problem in _bad_inputs(data_dir, tmp_path):
        with pytest.raises(FrameFormatError) as error:
            read_frame(path)
        message = str(error.value)
        assert message.startswith(f"{path}: ") and problem in message, message
        assert "\n" not in message


def test_writers_refuse_bad_targets_and_leave_nothing(kodim15: Path, tmp_path: Path) -> None:
    frame = read_frame(kodim15)
    with pytest.raises(FrameFormatError, match="does not exist"):
        write_frame(frame, tmp_path / "no" / "such" / "out.png")
    with pytest.raises(FrameFormatError, match="cannot write an rgb frame as raw YUV"):
        write_frame(frame, tmp_path / "out_192x128_yuv420_8b.yuv")
    yuv = FrameData((frame.planes[0],), 8, "yuv444")
    with pytest.raises(FrameFormatError, match="file name declares"):
        write_frame(yuv, tmp_path / "out_100x100_yuv444_8b.yuv")
    assert list(tmp_path.iterdir()) == []
