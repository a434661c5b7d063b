"""Video verification: the pure rules as a table, the probe on real small MP4s.

The rule: only a file that is not a playable video fails; every difference from the
request is a warning (the clip was paid for and plays)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from worker import verify
from worker.errors import InvalidVideo
from worker.verify import VideoInfo, inspect_video, probe_video, verify_video, video_warnings

FPS = 5
AUDIO_RATE_HZ = 16000


def make_video(
    path: Path,
    *,
    width: int,
    height: int,
    duration_s: float,
    audio: bool = False,
    faststart: bool = False,
) -> Path:
    """A small H.264 MP4 (plus AAC when ``audio``): few frames, fast to write and read."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast"}
        # Every stream is added before the first mux, which writes the header.
        sound = container.add_stream("aac", rate=AUDIO_RATE_HZ) if audio else None
        for i in range(round(duration_s * FPS)):
            pixels = np.full((height, width, 3), (i * 23) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            total = round(duration_s * AUDIO_RATE_HZ)
            for offset in range(0, total, 1024):
                samples = np.zeros((1, min(1024, total - offset)), dtype=np.float32)
                aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts = AUDIO_RATE_HZ, offset
                aframe.time_base = Fraction(1, AUDIO_RATE_HZ)
                container.mux(sound.encode(aframe))
            container.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "480p-16:9-4s": make_video(folder / "a.mp4", width=854, height=480, duration_s=4),
        "480p-16:9-4s-audio": make_video(
            folder / "b.mp4", width=854, height=480, duration_s=4, audio=True
        ),
        "720p-9:16-5s": make_video(folder / "c.mp4", width=720, height=1280, duration_s=5),
        "480p-faststart": make_video(
            folder / "d.mp4", width=854, height=480, duration_s=4, faststart=True
        ),
    }


ASKED = {"duration": 4, "resolution": "480p", "aspect_ratio": "16:9", "generate_audio": False}


# --- the probe on real files --------------------------------------------------------------


def test_good_video_passes_with_its_facts(videos: dict[str, Path]) -> None:
    info = verify_video(videos["480p-16:9-4s"], ASKED)
    assert (info.width, info.height, info.has_audio) == (854, 480, False)
    assert info.video_codec == "h264"
    assert info.duration_s == pytest.approx(4.0, abs=0.25)
    assert info.size_bytes == videos["480p-16:9-4s"].stat().st_size


def test_video_with_audio_passes_when_audio_was_asked(videos: dict[str, Path]) -> None:
    info = verify_video(videos["480p-16:9-4s-audio"], {**ASKED, "generate_audio": True})
    assert info.has_audio


def test_portrait_720p_passes(videos: dict[str, Path]) -> None:
    asked = {"duration": 5, "resolution": "720p", "aspect_ratio": "9:16"}
    verify_video(videos["720p-9:16-5s"], asked)


@pytest.mark.parametrize(
    ("video", "change", "reason"),
    [
        ("480p-16:9-4s", {"duration": 8}, "duration 4.00s, asked 8s"),
        ("480p-16:9-4s", {"resolution": "720p"}, "not 720p"),
        ("480p-16:9-4s", {"aspect_ratio": "1:1"}, "is not 1:1"),
        ("480p-16:9-4s", {"generate_audio": True}, "no audio track"),
        ("480p-16:9-4s-audio", {}, "has an audio track"),
    ],
)
def test_a_playable_mismatch_is_a_warning_not_a_failure(
    videos: dict[str, Path], video: str, change: dict[str, Any], reason: str
) -> None:
    checked = inspect_video(videos[video], {**ASKED, **change})
    assert len(checked.warnings) == 1 and reason in checked.warnings[0], checked.warnings
    assert checked.info.duration_s == pytest.approx(4.0, abs=0.25)
    # verify_video (the auditor's check of stored clips) follows the same rule.
    assert verify_video(videos[video], {**ASKED, **change}) == checked.info


def test_every_mismatch_is_a_warning(videos: dict[str, Path]) -> None:
    asked = {"duration": 10, "resolution": "1080p", "generate_audio": True}
    assert len(inspect_video(videos["480p-16:9-4s"], asked).warnings) == 3


def test_a_matching_video_has_no_warning(videos: dict[str, Path]) -> None:
    assert inspect_video(videos["480p-16:9-4s"], ASKED).warnings == []


@pytest.mark.parametrize("video", ["480p-16:9-4s", "480p-faststart"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_invalid(
    videos: dict[str, Path], tmp_path: Path, video: str, keep: float
) -> None:
    data = videos[video].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InvalidVideo):
        verify_video(cut, ASKED)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage" * 1000,
        b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 4000,  # an MP4 header and nothing after
        b"<html><body>Access Denied</body></html>",
    ],
)
def test_garbage_is_invalid(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(data)
    with pytest.raises(InvalidVideo):
        probe_video(path)


def test_missing_file_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidVideo, match="cannot read"):
        probe_video(tmp_path / "absent.mp4")


def test_audio_only_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "sound.m4a"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=AUDIO_RATE_HZ)
        aframe = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
        )
        aframe.sample_rate, aframe.pts = AUDIO_RATE_HZ, 0
        container.mux(stream.encode(aframe))
        container.mux(stream.encode(None))
    with pytest.raises(InvalidVideo, match="no video stream"):
        probe_video(path)


# --- the pure rules -----------------------------------------------------------------------


def facts(
    width: int = 1280, height: int = 720, duration_s: float = 5.0, has_audio: bool = False
) -> VideoInfo:
    return VideoInfo(duration_s, width, height, has_audio, "h264", 1000)


@pytest.mark.parametrize(
    ("video", "params", "expected"),
    [
        # duration
        (facts(duration_s=5.0), {"duration": 5}, []),
        (facts(duration_s=5.9), {"duration": 5}, []),
        (facts(duration_s=6.2), {"duration": 5}, ["duration 6.20s, asked 5s"]),
        (facts(duration_s=3.5), {"duration": 5}, ["duration 3.50s, asked 5s"]),
        (facts(duration_s=4.0), {"duration": -1}, []),
        (facts(duration_s=15.4), {"duration": -1}, []),
        (facts(duration_s=2.0), {"duration": -1}, ["outside 4..15s (auto)"]),
        (facts(duration_s=17.0), {"duration": None}, ["outside 4..15s (auto)"]),
        # resolution: exact short side, either orientation
        (facts(854, 480), {"resolution": "480p"}, []),
        (facts(480, 854), {"resolution": "480p"}, []),
        (facts(1120, 480), {"resolution": "480p"}, []),
        (facts(1280, 720), {"resolution": "720p"}, []),
        (facts(1920, 1080), {"resolution": "1080p"}, []),
        (facts(3840, 2160), {"resolution": "4k"}, []),
        # resolution: provider sizes that keep the class's area
        (facts(1248, 704), {"resolution": "720p"}, []),
        (facts(960, 960), {"resolution": "720p"}, []),
        (facts(960, 416), {"resolution": "480p"}, []),
        (facts(1920, 1088), {"resolution": "1080p"}, []),
        # resolution: the wrong class
        (facts(1280, 720), {"resolution": "1080p"}, ["is not 1080p"]),
        (facts(854, 480), {"resolution": "720p"}, ["is not 720p"]),
        (facts(1920, 1080), {"resolution": "4k"}, ["is not 4k"]),
        (facts(1280, 720), {"resolution": "8k"}, ["unknown resolution class"]),
        # aspect ratio
        (facts(1280, 720), {"aspect_ratio": "16:9"}, []),
        (facts(854, 480), {"aspect_ratio": "16:9"}, []),
        (facts(736, 544), {"aspect_ratio": "4:3"}, []),
        (facts(960, 416), {"aspect_ratio": "21:9"}, []),
        (facts(720, 1280), {"aspect_ratio": "9:16"}, []),
        (facts(1280, 720), {"aspect_ratio": "9:16"}, ["is not 9:16"]),
        (facts(1280, 720), {"aspect_ratio": "4:3"}, ["is not 4:3"]),
        (facts(1280, 720), {"aspect_ratio": "adaptive"}, []),
        (facts(3000, 720), {"aspect_ratio": "adaptive"}, []),
        # audio
        (facts(has_audio=True), {"generate_audio": True}, []),
        (facts(has_audio=False), {"generate_audio": False}, []),
        (facts(has_audio=False), {}, []),
        (facts(has_audio=False), {"generate_audio": True}, ["no audio track"]),
        (facts(has_audio=True), {"generate_audio": False}, ["has an audio track"]),
        (facts(has_audio=True), {}, ["has an audio track"]),
    ],
)
def test_video_warnings(video: VideoInfo, params: dict[str, Any], expected: list[str]) -> None:
    reasons = video_warnings(video, {"duration": 5, **params})
    assert len(reasons) == len(expected), reasons
    for reason, fragment in zip(reasons, expected, strict=True):
        assert fragment in reason


@pytest.mark.parametrize(("actual_s", "ok"), [(6.4, True), (7.6, False)])
def test_duration_tolerance_is_a_parameter(actual_s: float, ok: bool) -> None:
    reasons = video_warnings(facts(duration_s=actual_s), {"duration": 5}, tolerance_s=2.5)
    assert (reasons == []) is ok


# --- the cost of a probe is bounded, whatever the file holds (issue 13, finding 8) -------


def make_bomb(path: Path, *, side: int, frames: int) -> Path:
    """``frames`` copies of one encoded all-black ``side`` x ``side`` frame: one encode
    however many frames, while every copy costs a full decode."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "51"}
        black = av.VideoFrame(side, side, "yuv420p")
        for plane in black.planes:
            plane.update(bytes(plane.buffer_size))
        black.pts, black.time_base = 0, Fraction(1, FPS)
        (data,) = [bytes(p) for p in [*stream.encode(black), *stream.encode(None)]]
        for i in range(frames):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base, packet.is_keyframe = Fraction(1, FPS), True
            container.mux(packet)
    return path


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many frames each probe decodes, counted where it decodes."""
    counts: list[int] = []
    real = verify._decode

    def counting(stream: Any, packet: Any) -> list[Any]:
        frames = real(stream, packet)
        counts.append(len(frames))
        return frames

    monkeypatch.setattr(verify, "_decode", counting)
    return counts


def test_an_oversized_frame_is_refused_before_anything_is_decoded(
    tmp_path: Path, decoded: list[int]
) -> None:
    """30 frames of 8192x8192: before the fix every one was decoded (1.3 s of CPU) and
    the file passed. Now the metadata refuses it, and the probe decodes nothing."""
    bomb = make_bomb(tmp_path / "bomb.mp4", side=8192, frames=30)
    with pytest.raises(InvalidVideo, match=r"frame size 8192x8192 \(67.1 MP\) is above"):
        probe_video(bomb)
    assert sum(decoded) == 0


def test_a_long_video_decodes_a_bounded_sample(tmp_path: Path, decoded: list[int]) -> None:
    """Every packet is read (the duration and truncation checks see them all), only the
    first SAMPLE_FRAMES are decoded."""
    frames = verify.SAMPLE_FRAMES * 4
    info = probe_video(make_bomb(tmp_path / "long.mp4", side=64, frames=frames))
    assert sum(decoded) == verify.SAMPLE_FRAMES
    assert info.duration_s == pytest.approx(frames / FPS)


def test_large_frames_decode_fewer(tmp_path: Path, decoded: list[int]) -> None:
    side = 2048  # 4.2 MP a frame: the pixel budget allows 11 of them
    probe_video(make_bomb(tmp_path / "big.mp4", side=side, frames=verify.SAMPLE_FRAMES))
    assert sum(decoded) == verify.sample_frames(side, side) == 11


def test_too_many_declared_frames_are_refused_before_decoding(
    videos: dict[str, Path], decoded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "MAX_FRAMES", 10)
    with pytest.raises(InvalidVideo, match="declares 20 frames, above the 10 cap"):
        probe_video(videos["480p-16:9-4s"])
    assert sum(decoded) == 0


@pytest.mark.parametrize(
    ("width", "height", "problem"),
    [
        (5040, 2160, None),  # 4k 21:9, the largest class
        (2160, 3840, None),
        (8192, 64, None),  # long, but few pixels
        (4097, 4096, "is above the 16.8 MP"),
        (8193, 16, "8192 px a side"),
        (0, 480, "no frame size"),
    ],
)
def test_frame_size_bounds(width: int, height: int, problem: str | None) -> None:
    found = verify.frame_size_problem(width, height)
    assert found is None if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("width", "height", "frames"),
    [(64, 64, 24), (1920, 1080, 24), (3840, 2160, 6), (5040, 2160, 4), (4096, 4096, 2)],
)
def test_sample_frames(width: int, height: int, frames: int) -> None:
    assert verify.sample_frames(width, height) == frames
