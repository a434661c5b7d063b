"""README command one: `seedq run manifests/example.yaml` with no configuration at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.processes import REPO, seedq_cli
from worker.verify import verify_video


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_embedded_main_job(tmp_path: Path, no_config_env: dict[str, str]) -> None:
    env = no_config_env
    out = tmp_path / "videos"
    done = seedq_cli(
        "run",
        str(REPO / "manifests/example.yaml"),
        "--out",
        str(out),
        env=env,
        cwd=tmp_path,
        timeout=200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no OXEN_API_KEY: demo run on the local simulator, nothing is paid" in done.stdout
    assert not (out / ".seedq").exists()  # the demo keeps no state, starts no redis-server
    assert "4 delivered" in done.stdout
    assert str(out) in done.stdout
    assert "Traceback" not in done.stderr
    videos = sorted((out / "example").glob("*.mp4"))
    assert [v.stem for v in videos] == [
        "lamp-glow",
        "mug-turntable",
        "orb-watermarked",
        "sneaker-to-orb",
    ]
    for video in videos:
        sidecar = json.loads(video.with_suffix(".json").read_text())
        info = verify_video(video, sidecar["params"])
        assert info.has_audio is sidecar["params"]["generate_audio"]
        assert sidecar["video"]["sha256"] and sidecar["generation_id"]
