"""Is the downloaded file a playable video, and how does it differ from the request?

Two halves: :func:`probe_video` opens the file with PyAV and decodes every video frame
(the impure edge; any decoder failure is :class:`~worker.errors.InvalidVideo`), and
:func:`video_warnings` compares what was found with the request (pure, and where the
rules live).

The clip was paid for when the provider made it, so only a file that is not a playable
video fails (and even that one is kept, in quarantine: ``worker.delivery``). Every
difference from the request (duration, resolution, aspect ratio, an audio track asked
for or not) is a *warning*: the clip is delivered, and the warning is recorded in the
job, its sidecar and the reports. Nothing here ever turns a difference into a failure.

Resolution rule: the short side equals the class (480/720/1080/2160 px), or the pixel
count is within :data:`AREA_TOLERANCE` of the class's 16:9 frame. The second arm is for
providers that round sizes to multiples of 16 and keep the area instead of the short
side (Seedance lists 1248x704 for 720p 16:9 and 960x416 for 480p 21:9); the classes'
areas differ by 2x or more, so the arm cannot mistake one class for another.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from worker.errors import InvalidVideo

SHORT_SIDE_PX = {"480p": 480, "720p": 720, "1080p": 1080, "4k": 2160}
RATIOS = {"21:9": 21 / 9, "16:9": 16 / 9, "4:3": 4 / 3, "1:1": 1.0, "3:4": 3 / 4, "9:16": 9 / 16}
AREA_TOLERANCE = 0.15
RATIO_TOLERANCE = 0.03  # relative; sizes rounded to even or /16 pixels drift up to ~1.5%
AUTO_MIN_S, AUTO_MAX_S = 4, 15


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a decoded video file holds."""

    duration_s: float
    width: int
    height: int
    has_audio: bool
    video_codec: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Verified:
    """A playable video's facts, and every way it differs from the request."""

    info: VideoInfo
    warnings: list[str]


def inspect_video(path: Path, params: dict[str, Any], *, tolerance_s: float = 1.0) -> Verified:
    """The facts and warnings of a file that decodes; InvalidVideo only when it is not a
    playable video (never for a difference from ``params``)."""
    info = probe_video(path)
    return Verified(info, video_warnings(info, params, tolerance_s=tolerance_s))


def verify_video(path: Path, params: dict[str, Any], *, tolerance_s: float = 1.0) -> VideoInfo:
    """The facts of a playable video (:func:`inspect_video` without its warnings)."""
    return inspect_video(path, params, tolerance_s=tolerance_s).info


def video_warnings(
    facts: VideoInfo, params: dict[str, Any], *, tolerance_s: float = 1.0
) -> list[str]:
    """Every way the video differs from the request; empty when it matches. Each is a
    warning, never a reason to fail: the clip plays and was paid for.

    A parameter missing from ``params`` is not checked (the provider chose it).
    """
    reasons = [
        _duration_reason(facts.duration_s, params.get("duration"), tolerance_s),
        _resolution_reason(facts.width, facts.height, params.get("resolution")),
        _ratio_reason(facts.width, facts.height, params.get("aspect_ratio")),
        _audio_reason(facts.has_audio, bool(params.get("generate_audio"))),
    ]
    return [r for r in reasons if r]


def _duration_reason(actual_s: float, requested: Any, tolerance_s: float) -> str | None:
    if requested is None or requested == -1:
        low, high = AUTO_MIN_S - tolerance_s, AUTO_MAX_S + tolerance_s
        if low <= actual_s <= high:
            return None
        return f"duration {actual_s:.2f}s is outside {AUTO_MIN_S}..{AUTO_MAX_S}s (auto)"
    if abs(actual_s - float(requested)) <= tolerance_s:
        return None
    return f"duration {actual_s:.2f}s, asked {requested}s (±{tolerance_s:g}s)"


def _resolution_reason(width: int, height: int, resolution: Any) -> str | None:
    if resolution is None:
        return None
    short = SHORT_SIDE_PX.get(str(resolution))
    if short is None:
        return f"unknown resolution class {resolution!r}"
    if min(width, height) == short:
        return None
    class_area = short * short * 16 / 9
    if abs(width * height / class_area - 1) <= AREA_TOLERANCE:
        return None
    return f"size {width}x{height} is not {resolution} (short side {short}px)"


def _ratio_reason(width: int, height: int, aspect_ratio: Any) -> str | None:
    expected = RATIOS.get(str(aspect_ratio))
    if expected is None or height <= 0:
        return None  # adaptive, absent or unknown: the image decides
    actual = width / height
    if abs(actual / expected - 1) <= RATIO_TOLERANCE:
        return None
    return f"aspect ratio {width}x{height} ({actual:.3f}) is not {aspect_ratio} ({expected:.3f})"


def _audio_reason(has_audio: bool, wanted: bool) -> str | None:
    if has_audio == wanted:
        return None
    if wanted:
        return "no audio track, but generate_audio was requested"
    return "has an audio track, but generate_audio was not requested"


# Decoder failures on a file we did not make: any of these is a property of the file.
_DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError, IndexError)


def probe_video(path: Path) -> VideoInfo:
    """Open ``path`` and decode every video frame; InvalidVideo if anything fails."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidVideo(f"cannot read the video file: {exc.strerror}") from exc
    if size == 0:
        raise InvalidVideo("the video file is empty")
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise InvalidVideo("the file has no video stream")
            stream = container.streams.video[0]
            # One decoding thread: a worker verifies many clips at once, and frame or
            # slice threads cost a third more CPU per clip for no gain in throughput.
            stream.codec_context.thread_count = 1
            codec = stream.codec_context.name
            has_audio = bool(container.streams.audio)
            width, height = stream.codec_context.width, stream.codec_context.height
            declared = stream.frames
            frames, duration_s = _decode_all(container, stream)
    except InvalidVideo:
        raise
    except _DECODE_ERRORS as exc:
        raise InvalidVideo(f"the file does not decode as a video: {_av_reason(exc)}") from exc
    if frames == 0:
        raise InvalidVideo("the video stream has no decodable frame")
    if declared and frames < declared:
        raise InvalidVideo(f"only {frames} of {declared} frames decode (truncated?)")
    return VideoInfo(
        duration_s=duration_s,
        width=width,
        height=height,
        has_audio=has_audio,
        video_codec=codec,
        size_bytes=size,
    )


def _decode_all(container: Any, stream: Any) -> tuple[int, float]:
    """Decode every frame; the count and the time from the first frame to the end of the
    last, measured from the frames themselves so a lying header cannot stretch it."""
    rate = stream.average_rate or stream.guessed_rate
    frame_s = Fraction(1) / rate if rate else Fraction(0)
    frames = 0
    # Timestamps are kept as integers in their time base and turned into seconds once:
    # exact fractions per frame cost more CPU than the decoding of a small frame.
    first: int | None = None
    last = 0
    time_base = None
    for frame in container.decode(stream):
        frames += 1
        pts = frame.pts
        if pts is None or frame.time_base is None:
            continue
        if time_base is None:
            time_base = frame.time_base
        if first is None or pts < first:
            first = pts
        if pts > last:
            last = pts
    if first is None or time_base is None:  # no timestamps at all: fall back on the rate
        return frames, float(frames * frame_s)
    return frames, float((last - first) * time_base + frame_s)


def _av_reason(exc: BaseException) -> str:
    """A short reason: FFmpeg's message without the file path (already known)."""
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__
