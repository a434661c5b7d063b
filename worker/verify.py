"""Is the downloaded file a playable video, and how does it differ from the request?

Two halves: :func:`probe_video` opens the file with PyAV, checks the stream's metadata
against a clip's bounds, reads every packet and decodes a bounded prefix (the impure
edge; any failure is :class:`~worker.errors.InvalidVideo`), and
:func:`video_warnings` compares what was found with the request (pure, and where the
rules live).

The clip was paid for when the provider made it, so only a file that is not a playable
video fails (and even that one is kept, in quarantine: ``worker.delivery``). Every
difference from the request (duration, resolution, aspect ratio, an audio track asked
for or not) is a *warning*: the clip is delivered, and the warning is recorded in the
job, its sidecar and the reports. Nothing here ever turns a difference into a failure.

Cost rule: a probe's CPU is bounded whatever the file holds. A frame above
:data:`MAX_FRAME_PIXELS` or a stream of more than :data:`MAX_FRAMES` frames is no clip
but a decompression bomb, refused from the container's metadata before anything is
decoded (and kept in quarantine like any unplayable file). Every packet is read (so a
truncated file is caught), but only the first :func:`sample_frames` are decoded: a
frame that is damaged later in an intact file is not noticed, the price of the bound.

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

# Bounds of a clip, checked from the container's metadata before anything is decoded.
# The largest class (4k, 21:9) is 5040x2160, 10.9 MP; a frame above MAX_FRAME_PIXELS
# or a side above MAX_SIDE_PX is not a clip but a decompression bomb.
MAX_SIDE_PX = 8192
MAX_FRAME_PIXELS = 4096 * 4096
MAX_FRAMES = 10_000  # 15 s at 60 fps is 900; 7 minutes at 24 fps
# What is decoded: a prefix of at most this many frames, fewer when they are large, so a
# probe decodes at most ~50 MP (24 frames of 1080p; 4 of 4k) whatever the file holds.
SAMPLE_FRAMES = 24
SAMPLE_PIXELS = SAMPLE_FRAMES * 1920 * 1080
_DECODER_OPTIONS = {"max_pixels": str(MAX_FRAME_PIXELS)}


@dataclass(frozen=True, slots=True)
class _Scan:
    """What one pass over the video stream's packets found."""

    packets: int
    decoded: int
    damaged: int
    duration_s: float


def probe_video(path: Path) -> VideoInfo:
    """Open ``path``, check the stream's metadata, read every packet and decode a bounded
    prefix; InvalidVideo if anything fails. The cost is bounded by the file's size (every
    packet is read, none past the sample decoded), never by what the file claims to hold."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidVideo(f"cannot read the video file: {exc.strerror}") from exc
    if size == 0:
        raise InvalidVideo("the video file is empty")
    try:
        # Opening decodes a frame or two to fill in the stream's facts: max_pixels makes
        # that decoder refuse a huge frame too, instead of spending a second on it.
        with av.open(str(path), mode="r", options=_DECODER_OPTIONS) as container:
            if not container.streams.video:
                raise InvalidVideo("the file has no video stream")
            stream = container.streams.video[0]
            codec, width, height, declared = _check_metadata(stream)
            has_audio = bool(container.streams.audio)
            scan = _scan(container, stream, sample_frames(width, height))
    except InvalidVideo:
        raise
    except _DECODE_ERRORS as exc:
        raise InvalidVideo(f"the file does not decode as a video: {_av_reason(exc)}") from exc
    if scan.damaged or (declared and scan.packets < declared):
        whole, expected = scan.packets - scan.damaged, declared or scan.packets
        raise InvalidVideo(f"only {whole} of {expected} frames are whole (truncated?)")
    if scan.decoded == 0:
        raise InvalidVideo("the video stream has no decodable frame")
    return VideoInfo(
        duration_s=scan.duration_s,
        width=width,
        height=height,
        has_audio=has_audio,
        video_codec=codec,
        size_bytes=size,
    )


def frame_size_problem(width: int, height: int) -> str | None:
    """Why a clip cannot be ``width`` x ``height``, or None when it can."""
    if width <= 0 or height <= 0:
        return "the video stream declares no frame size"
    if max(width, height) > MAX_SIDE_PX or width * height > MAX_FRAME_PIXELS:
        return (
            f"frame size {width}x{height} ({width * height / 1e6:.1f} MP) is above the "
            f"{MAX_FRAME_PIXELS / 1e6:.1f} MP (and {MAX_SIDE_PX} px a side) a clip can have"
        )
    return None


def sample_frames(width: int, height: int) -> int:
    """How many frames to decode: SAMPLE_FRAMES, fewer when they are large, at least 1."""
    return max(1, min(SAMPLE_FRAMES, SAMPLE_PIXELS // max(1, width * height)))


def _check_metadata(stream: Any) -> tuple[str, int, int, int]:
    """The codec, size and declared frame count, from the container alone (nothing is
    decoded yet); InvalidVideo when they are out of a clip's bounds."""
    context = stream.codec_context
    width, height = context.width, context.height
    problem = frame_size_problem(width, height)
    if problem:
        raise InvalidVideo(problem)
    declared = stream.frames or 0
    if declared > MAX_FRAMES:
        raise InvalidVideo(f"the video declares {declared} frames, above the {MAX_FRAMES} cap")
    # One decoding thread: a worker verifies many clips at once, and frame or slice
    # threads cost a third more CPU per clip for no gain in throughput. max_pixels makes
    # the decoder itself refuse a frame larger than the container said (a lying header).
    context.thread_count = 1
    context.options = dict(_DECODER_OPTIONS)
    return context.name, width, height, declared


def _scan(container: Any, stream: Any, sample: int) -> _Scan:
    """Read every packet of ``stream`` (a truncated file shows as missing or damaged
    packets) and decode only the first ``sample``. The duration runs from the first
    timestamp to the end of the last, from the packets themselves, so a lying header
    cannot stretch it. Timestamps stay integers in their time base until the end."""
    rate = stream.average_rate or stream.guessed_rate
    frame_s = Fraction(1) / rate if rate else Fraction(0)
    packets = decoded = damaged = 0
    first: int | None = None
    last = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker, not a frame
        packets += 1
        if packets > MAX_FRAMES:
            raise InvalidVideo(f"the video has more than {MAX_FRAMES} frames")
        damaged += bool(packet.is_corrupt)
        if packets <= sample:
            decoded += len(_decode(stream, packet))
        pts = packet.pts
        if pts is not None:
            first = pts if first is None else min(first, pts)
            last = max(last, pts)
    decoded += len(_decode(stream, None))  # frames the decoder held back for reordering
    if first is None or stream.time_base is None:  # no timestamps: fall back on the rate
        return _Scan(packets, decoded, damaged, float(packets * frame_s))
    return _Scan(packets, decoded, damaged, float((last - first) * stream.time_base + frame_s))


def _decode(stream: Any, packet: Any) -> list[Any]:
    """The frames one packet (None: the end) decodes to: the one place a probe decodes."""
    return list(stream.decode(packet))


def _av_reason(exc: BaseException) -> str:
    """A short reason: FFmpeg's message without the file path (already known)."""
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__
