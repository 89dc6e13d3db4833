"""Every image mode Pillow opens decodes to the right RGB: 16-bit and float greyscale scaled (not clipped
white), CMYK converted, transparency composited over white, palettes and 1-bit expanded."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facequeue.settings import get_settings
from tests.photos import astronaut
from workers.pipeline.decode import decode_image, to_rgb

LIMITS = (20 * 1024 * 1024, 40_000_000)


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def grey8() -> np.ndarray:
    return np.asarray(Image.fromarray(astronaut()).convert("L"))


def as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def assert_close(got: np.ndarray, want: np.ndarray, mean: float, worst: int = 255) -> None:
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.mean() <= mean and diff.max() <= worst, (diff.mean(), diff.max())


def test_16bit_greyscale_png_is_scaled_not_clipped() -> None:
    grey = grey8()
    data = encode(Image.fromarray(grey.astype(np.uint16) * 257))  # full 16-bit range
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # Pillow opens it as I;16 (or I)
    assert_close(decode_image(data, *LIMITS).rgb, as_rgb(grey), mean=0.01, worst=1)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16bit_modes(mode: str) -> None:
    grey = grey8()
    wide = grey.astype(np.uint16) * 257
    raw = wide.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    image = Image.frombytes(mode, (grey.shape[1], grey.shape[0]), raw)
    assert_close(to_rgb(image), as_rgb(grey), mean=0.01, worst=1)


def test_32bit_integer_mode_I() -> None:
    grey = grey8()
    assert_close(to_rgb(Image.fromarray(grey.astype(np.int32) * 257, "I")), as_rgb(grey), 0.01, 1)
    assert_close(to_rgb(Image.fromarray(grey.astype(np.int32), "I")), as_rgb(grey), 0, 0)  # 8-bit values


def test_float_mode_F() -> None:
    grey = grey8()
    unit = Image.fromarray(grey.astype(np.float32) / 255, "F")  # [0, 1] floats
    assert_close(to_rgb(unit), as_rgb(grey), mean=0.01, worst=1)
    with_nan = np.asarray(unit, dtype=np.float32).copy()
    with_nan[0, 0] = np.nan
    assert to_rgb(Image.fromarray(with_nan, "F"))[0, 0].tolist() == [0, 0, 0]  # no crash, no garbage


def test_cmyk_jpeg() -> None:
    rgb = astronaut()
    data = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert_close(decode_image(data, *LIMITS).rgb, rgb, mean=6)


def test_palette_with_transparency_over_white() -> None:
    palette = Image.fromarray(astronaut()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pixels = np.asarray(palette).copy()
    pixels[:100, :100] = 0
    palette = Image.fromarray(pixels, "P")
    palette.putpalette(Image.fromarray(astronaut()).convert("P", colors=64).getpalette())
    data = encode(palette, transparency=0)
    decoded = decode_image(data, *LIMITS).rgb
    assert (decoded[:100, :100] == 255).all()  # the transparent index is white, not its palette colour
    opaque = np.asarray(palette.convert("RGB"))
    mask = pixels != 0
    assert (decoded[mask] == opaque[mask]).all()


def test_greyscale_with_alpha_LA() -> None:
    grey = grey8()
    alpha = np.full_like(grey, 255)
    alpha[:, :256] = 0  # left half transparent
    alpha[:, 256:300] = 128
    data = encode(Image.fromarray(np.stack([grey, alpha], axis=2), "LA"))
    decoded = decode_image(data, *LIMITS).rgb
    assert (decoded[:, :256] == 255).all()
    assert_close(decoded[:, 300:], as_rgb(grey)[:, 300:], 0, 0)
    half = np.round(grey[:, 256:300].astype(float) * 128 / 255 + 255 * 127 / 255)
    assert_close(decoded[:, 256:300, 0], half.astype(np.uint8), mean=1, worst=2)


def test_rgba() -> None:
    rgb = astronaut()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[400:] = 0
    decoded = decode_image(encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA")), *LIMITS).rgb
    assert (decoded[400:] == 255).all()
    assert_close(decoded[:400], rgb[:400], 0, 0)


def test_bilevel_mode_1() -> None:
    grey = grey8()
    data = encode(Image.fromarray(grey).convert("1", dither=Image.Dither.NONE))
    decoded = decode_image(data, *LIMITS).rgb
    assert set(np.unique(decoded)) <= {0, 255}
    assert_close(decoded, as_rgb(np.where(grey >= 128, 255, 0).astype(np.uint8)), mean=1)


def test_greyscale_png_with_transparent_value() -> None:
    grey = grey8().copy()
    grey[:50] = 7
    data = encode(Image.fromarray(grey), transparency=7)
    assert (decode_image(data, *LIMITS).rgb[:50] == 255).all()


@pytest.mark.models
def test_16bit_face_is_analysed_like_its_8bit_version() -> None:
    from workers.pipeline.analyse import get_pipeline

    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider"})
    pipeline = get_pipeline(settings)
    grey = grey8()
    eight = decode_image(encode(Image.fromarray(grey)), *LIMITS).rgb
    sixteen = decode_image(encode(Image.fromarray(grey.astype(np.uint16) * 257)), *LIMITS).rgb
    faces8 = pipeline.analyse(eight, {"bestface"})
    faces16 = pipeline.analyse(sixteen, {"bestface"})
    assert len(faces8) == len(faces16) == 1
    assert np.allclose(faces8[0].box, faces16[0].box, atol=2)
    (model,) = faces8[0].embeddings
    assert float(faces8[0].embeddings[model] @ faces16[0].embeddings[model]) > 0.99
