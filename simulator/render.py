"""Rendering of the simulated videos: pure size and duration rules, and an H.264 MP4
writer (PyAV) animating the input image with a slow zoom, a crossfade to the tail image,
an optional AAC tone track and an optional "AI generated" mark.

Everything here is synchronous and CPU-bound; the runner calls :func:`render_video` in a
worker thread so the server stays responsive.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from simulator.errors import GenerationFailed

SHORT_SIDE_PX = {"480p": 480, "720p": 720, "1080p": 1080, "4k": 2160}
RATIOS = {
    "21:9": (21, 9),
    "16:9": (16, 9),
    "4:3": (4, 3),
    "1:1": (1, 1),
    "3:4": (3, 4),
    "9:16": (9, 16),
}
# An adaptive ratio follows the image but stays within the widest documented ratios,
# so a 10000x10 banner cannot ask for a 480000-pixel-wide video.
MAX_ADAPTIVE_RATIO = 21 / 9
AUTO_MIN_S, AUTO_MAX_S = 4, 15
IMAGE_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
AUDIO_RATE_HZ = 44100
AUDIO_FRAME_SAMPLES = 1024
ZOOM_END = 1.12
WATERMARK_TEXT = "AI generated"


@dataclass(frozen=True)
class VideoSpec:
    """What to render, after every default and rule has been applied."""

    width: int
    height: int
    duration_s: int
    fps: int
    generate_audio: bool
    watermark: bool


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def output_size(resolution: str, aspect_ratio: str, image_w: int, image_h: int) -> tuple[int, int]:
    """Width and height of the video: the short side is the resolution class, the long one
    follows the ratio (``adaptive``: the image's ratio), both even for yuv420p."""
    short = SHORT_SIDE_PX[resolution]
    if aspect_ratio == "adaptive":
        ratio = (image_w / image_h) if image_w > 0 and image_h > 0 else 1.0
        ratio = min(max(ratio, 1 / MAX_ADAPTIVE_RATIO), MAX_ADAPTIVE_RATIO)
    else:
        num, den = RATIOS[aspect_ratio]
        ratio = num / den
    if ratio >= 1:
        return _even(short * ratio), short
    return short, _even(short / ratio)


def chosen_duration_s(params: dict[str, Any]) -> int:
    """The duration of a ``-1`` (auto) request: 4..15, the same for the same parameters."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    digest = int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")
    return AUTO_MIN_S + digest % (AUTO_MAX_S - AUTO_MIN_S + 1)


def decode_image(data: bytes, field: str) -> Image.Image:
    """The RGB image in ``data``; only the documented formats are accepted."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception:
        raise GenerationFailed(f"{field} is not a readable JPEG, PNG or WebP image") from None
    if image.format not in IMAGE_FORMATS:
        raise GenerationFailed(f"{field} must be JPEG, PNG or WebP, got {image.format}")
    return image.convert("RGB")


def synthetic_image(width: int, height: int) -> Image.Image:
    """A gradient standing in for the input image in --fast mode."""
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack(
        [
            np.broadcast_to(xs, (height, width)),
            np.broadcast_to(ys, (height, width)),
            np.full((height, width), 128, np.float32),
        ],
        axis=-1,
    )
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover ``width x height`` and crop the centre."""
    scale = max(width / image.width, height / image.height)
    scaled = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
        Image.Resampling.BILINEAR,
    )
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    return scaled.crop((left, top, left + width, top + height))


def _zoomed(base: Image.Image, progress: float) -> Image.Image:
    zoom = 1 + (ZOOM_END - 1) * progress
    w, h = base.size
    cw, ch = w / zoom, h / zoom
    # A slight drift to the right on top of the zoom, so the motion reads as a pan too.
    cx = w / 2 + (w - cw) / 2 * 0.5 * progress
    box = (cx - cw / 2, h / 2 - ch / 2, cx + cw / 2, h / 2 + ch / 2)
    return base.resize((w, h), Image.Resampling.BILINEAR, box=box)


def _watermark(frame: Image.Image) -> None:
    draw = ImageDraw.Draw(frame)
    size = max(12, frame.height // 18)
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), WATERMARK_TEXT, font=font)
    pad = size // 3
    x = frame.width - (right - left) - 3 * pad
    y = frame.height - (bottom - top) - 3 * pad
    draw.rectangle((x - pad, y - pad, x + right - left + pad, y + bottom + pad), fill=(0, 0, 0))
    draw.text((x - left, y), WATERMARK_TEXT, font=font, fill=(255, 255, 255))


def _frames(spec: VideoSpec, start: Image.Image, tail: Image.Image | None) -> list[Image.Image]:
    base = _cover(start, spec.width, spec.height)
    tail_base = _cover(tail, spec.width, spec.height) if tail is not None else None
    count = spec.duration_s * spec.fps
    frames = []
    for i in range(count):
        progress = i / max(1, count - 1)
        frame = _zoomed(base, progress)
        if tail_base is not None:
            # Crossfade over the second half, ending exactly on the tail image.
            alpha = min(1.0, max(0.0, (progress - 0.5) * 2))
            frame = Image.blend(frame, _zoomed(tail_base, progress), alpha)
        if spec.watermark:
            _watermark(frame)
        frames.append(frame)
    return frames


def _tone(duration_s: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    t = np.arange(duration_s * AUDIO_RATE_HZ, dtype=np.float32) / AUDIO_RATE_HZ
    return (0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def render_video(spec: VideoSpec, start: Image.Image, tail: Image.Image | None = None) -> bytes:
    """An MP4 (H.264, plus AAC when ``spec.generate_audio``) of ``spec.duration_s`` seconds."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=spec.fps)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=AUDIO_RATE_HZ) if spec.generate_audio else None
        for i, image in enumerate(_frames(spec, start, tail)):
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, spec.fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            samples = _tone(spec.duration_s)
            for offset in range(0, len(samples), AUDIO_FRAME_SAMPLES):
                chunk = samples[offset : offset + AUDIO_FRAME_SAMPLES][None, :]
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts = AUDIO_RATE_HZ, offset
                aframe.time_base = Fraction(1, AUDIO_RATE_HZ)
                container.mux(audio.encode(aframe))
            container.mux(audio.encode(None))
    return buffer.getvalue()
