"""Pure size and duration rules, and the rendered MP4s checked with PyAV."""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from simulator.errors import GenerationFailed
from simulator.render import (
    VideoSpec,
    chosen_duration_s,
    decode_image,
    output_size,
    render_video,
    synthetic_image,
)


@pytest.mark.parametrize(
    ("resolution", "ratio", "image", "expected"),
    [
        ("480p", "16:9", (100, 100), (854, 480)),
        ("720p", "16:9", (100, 100), (1280, 720)),
        ("1080p", "16:9", (100, 100), (1920, 1080)),
        ("4k", "16:9", (100, 100), (3840, 2160)),
        ("480p", "9:16", (100, 100), (480, 854)),
        ("720p", "1:1", (300, 100), (720, 720)),
        ("480p", "4:3", (1, 1), (640, 480)),
        ("480p", "3:4", (1, 1), (480, 640)),
        ("480p", "21:9", (1, 1), (1120, 480)),
        ("720p", "adaptive", (400, 300), (960, 720)),
        ("720p", "adaptive", (300, 400), (720, 960)),
        ("480p", "adaptive", (10000, 10), (1120, 480)),  # clamped to 21:9
        ("480p", "adaptive", (333, 333), (480, 480)),
    ],
)
def test_output_size(
    resolution: str, ratio: str, image: tuple[int, int], expected: tuple[int, int]
) -> None:
    width, height = output_size(resolution, ratio, *image)
    assert (width, height) == expected
    assert width % 2 == 0 and height % 2 == 0


def test_auto_duration_is_deterministic_and_in_range() -> None:
    seen = {chosen_duration_s({"prompt": f"p{i}", "duration": -1}) for i in range(200)}
    assert seen <= set(range(4, 16)) and len(seen) > 5
    assert chosen_duration_s({"a": 1}) == chosen_duration_s({"a": 1})


def _probe(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data), mode="r") as container:
        video = container.streams.video[0]
        first = next(container.decode(video)).to_ndarray(format="rgb24")
        return {
            "duration_s": (container.duration or 0) / 1_000_000,
            "size": (video.width, video.height),
            "codec": video.codec_context.name,
            "audio": len(container.streams.audio),
            "first": first,
        }


def _spec(**changes: Any) -> VideoSpec:
    base: dict[str, Any] = {
        "width": 320,
        "height": 240,
        "duration_s": 4,
        "fps": 6,
        "generate_audio": False,
        "watermark": False,
    }
    return VideoSpec(**{**base, **changes})


@pytest.mark.parametrize("audio", [False, True])
def test_render_duration_size_audio(audio: bool) -> None:
    info = _probe(
        render_video(_spec(generate_audio=audio, duration_s=5), synthetic_image(200, 100))
    )
    assert info["codec"] == "h264"
    assert info["size"] == (320, 240)
    assert abs(info["duration_s"] - 5) < 0.5
    assert info["audio"] == (1 if audio else 0)


def test_watermark_changes_pixels() -> None:
    image = synthetic_image(320, 240)
    plain = _probe(render_video(_spec(), image))["first"]
    marked = _probe(render_video(_spec(watermark=True), image))["first"]
    diff = np.abs(plain.astype(int) - marked.astype(int)).sum(axis=-1) > 60
    assert diff.sum() > 500
    # The mark sits in the bottom-right corner; the top-left is untouched.
    assert diff[:120, :160].sum() == 0


def test_tail_image_crossfades() -> None:
    start = Image.new("RGB", (64, 48), (255, 0, 0))
    tail = Image.new("RGB", (64, 48), (0, 0, 255))
    data = render_video(_spec(), start, tail)
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert frames[0][..., 0].mean() > 200 and frames[0][..., 2].mean() < 50
    assert frames[-1][..., 2].mean() > 200 and frames[-1][..., 0].mean() < 50


def test_decode_image_refuses_other_formats() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    with pytest.raises(GenerationFailed, match="JPEG, PNG or WebP"):
        decode_image(buffer.getvalue(), "input_image")
    with pytest.raises(GenerationFailed, match="input_image"):
        decode_image(b"junk", "input_image")
