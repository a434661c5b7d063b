"""Manifest reading and validation: every rule, by example."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from producer import yaml_reader
from producer.errors import Problem
from producer.jobs import JobSpec
from producer.yaml_reader import YAML_MAX_NODES
from seedq.refs import parse_s3_allow
from seedq.settings import Settings

Parse = Callable[..., tuple[list[JobSpec], list[Problem]]]
Write = Callable[[str, str | bytes], Path]

YAML_OK = """\
model: bytedance-seedance-2-0-image-to-video
defaults:
  resolution: 720p
jobs:
  - prompt: a mug turns
    input_image: images/a.png
  - id: second
    prompt: a lamp glows
    input_image: images/b.jpg
    duration: 5
    generate_audio: yes
"""


def msgs(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def test_yaml_happy_path(write: Write, parse: Parse, images: Path) -> None:
    jobs, problems = parse(write("m.yaml", YAML_OK))
    assert problems == []
    assert [j.line for j in jobs] == [5, 7]
    first, second = jobs
    assert first.id.startswith("j") and len(first.id) == 25
    assert second.id == "second"
    assert first.params["resolution"] == "720p"
    assert first.params["duration"] == -1  # schema default made explicit
    assert first.params["aspect_ratio"] == "adaptive"
    assert first.params["input_image"] == str((images / "a.png").resolve())
    assert second.params["generate_audio"] is True and second.params["duration"] == 5
    assert first.output_key == f"{first.id}.mp4"
    assert second.output_key == "second.mp4"


def test_ids_are_stable_and_follow_content(write: Write, parse: Parse) -> None:
    a, _ = parse(write("a.yaml", YAML_OK))
    b, _ = parse(write("b.yaml", YAML_OK))
    assert [j.id for j in a] == [j.id for j in b]
    c, _ = parse(write("c.yaml", YAML_OK.replace("a mug turns", "a mug spins")))
    assert c[0].id != a[0].id
    assert c[1].id == a[1].id


CSV_OK = (
    "\ufeffsku,product_name,input_image,Resolution,duration,generate_audio,watermark\r\n"
    'SKU-1,"mug, blue",images/a.png,480p,auto,Yes,0\r\n'
    "\r\n"
    'SKU-2,"lamp ""deluxe""\nwith newline",images/b.jpg,1080p,8,FALSE,TRUE\r\n'
    "SKU-3,plain,images/c.webp,,4.0,no,\r\n"
    "\r\n\r\n"
)


def test_csv_as_spreadsheets_write_it(write: Write, parse: Parse) -> None:
    path = write("cat.csv", CSV_OK)
    jobs, problems = parse(
        path,
        sets={"prompt": "A slow turntable of {product_name}", "output": "catalog/{sku}.mp4"},
    )
    assert problems == []
    assert [j.line for j in jobs] == [2, 4, 6]
    assert [j.output_key for j in jobs] == [
        "catalog/SKU-1.mp4",
        "catalog/SKU-2.mp4",
        "catalog/SKU-3.mp4",
    ]
    assert jobs[0].params["prompt"] == "A slow turntable of mug, blue"
    assert jobs[1].params["prompt"] == 'A slow turntable of lamp "deluxe"\nwith newline'
    assert jobs[0].params["duration"] == -1 and jobs[2].params["duration"] == 4
    assert jobs[0].params["generate_audio"] is True and jobs[1].params["generate_audio"] is False
    assert jobs[1].params["watermark"] is True and jobs[2].params["watermark"] is False
    assert jobs[2].params["resolution"] == "720p"  # blank cell: schema default


def test_row_values_beat_defaults_beat_sets(write: Write, parse: Parse) -> None:
    path = write(
        "m.yaml",
        "defaults: {resolution: 480p, duration: 6}\n"
        "jobs:\n  - {prompt: p, input_image: images/a.png, duration: 9}\n",
    )
    jobs, problems = parse(path, sets={"resolution": "1080p", "duration": "5", "watermark": "yes"})
    assert problems == []
    assert jobs[0].params["resolution"] == "480p"
    assert jobs[0].params["duration"] == 9
    assert jobs[0].params["watermark"] is True


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "prompt: p\n    input_image: images/a.png\n    resolution: 8k",
            "m.yaml:4: resolution: must be one of 480p, 720p, 1080p, 4k (got '8k')",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    duration: 3",
            "m.yaml:4: duration: must be -1 (auto) or 4 to 15 (got 3)",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    duration: 16",
            "m.yaml:4: duration: must be at most 15 (got 16)",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    duration: soon",
            "m.yaml:4: duration: input should be a valid integer",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    aspect_ratio: '2:1'",
            "m.yaml:4: aspect_ratio: must be one of adaptive",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    generate_audio: maybe",
            "m.yaml:4: generate_audio: input should be a valid boolean",
        ),
        ("input_image: images/a.png", "m.yaml:2: prompt: is required"),
        ("prompt: p", "m.yaml:2: input_image: is required"),
        ("prompt: ''\n    input_image: images/a.png", "m.yaml:2: prompt: must not be empty"),
        (
            "prompt: p\n    input_image: images/nope.png",
            "m.yaml:3: input_image: no such file: images/nope.png",
        ),
        (
            "prompt: p\n    input_image: http://127.0.0.1/a.png",
            "m.yaml:3: input_image: address 127.0.0.1 is loopback",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    tail_image_url: ftp://x/y.png",
            "m.yaml:4: tail_image_url: unsupported scheme 'ftp'",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    output: ../../etc/x.mp4",
            "m.yaml:4: output: output key must not contain . or .. segments",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    output: /abs.mp4",
            "m.yaml:4: output: output key must be relative",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    id: 'has space'",
            "m.yaml:4: id: must be 1-128 letters",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    priority: 5000",
            "m.yaml:4: priority: input should be less than or equal to 1000",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    promt: typo",
            "m.yaml:4: promt: unknown field (did you mean 'prompt'?)",
        ),
        (
            "prompt: p\n    input_image: images/a.png\n    resolutoin: 720p",
            "m.yaml:4: resolutoin: unknown field (did you mean 'resolution'?)",
        ),
        (
            "prompt: 'a {missing} thing'\n    input_image: images/a.png",
            "m.yaml:2: prompt: unknown placeholder {missing}",
        ),
    ],
)
def test_yaml_job_rules(write: Write, parse: Parse, row: str, expected: str) -> None:
    path = write("m.yaml", f"jobs:\n  - {row}\n")
    jobs, problems = parse(path)
    assert expected in "\n".join(msgs(problems)).replace(str(path.parent) + "/", "")
    assert jobs == []


def test_yaml_number_that_was_not_meant_is_refused_at_its_line(write: Write, parse: Parse) -> None:
    """YAML 1.1 reads an unquoted 16:9 as 969 (base 60) and 0123 as 83 (octal): said at
    the field's own line, with the quoting that fixes it, once."""
    text = (
        "defaults:\n"
        "  duration: 010\n"
        "jobs:\n"
        "  - prompt: p\n"
        "    input_image: images/a.png\n"
        "    aspect_ratio: 16:9\n"
        "    vars: {sku: 0123}\n"
        "  - prompt: q\n"
        "    input_image: images/a.png\n"
        "    aspect_ratio: '16:9'\n"
    )
    path = write("m.yaml", text)
    jobs, problems = parse(path)
    shown = [m.replace(str(path.parent) + "/", "") for m in msgs(problems)]
    quote = "; it must be quoted: "
    assert shown == [
        "m.yaml:2: defaults.duration: YAML read 010 as the number 8" + quote + 'duration: "010"',
        "m.yaml:6: aspect_ratio: YAML read 16:9 as the number 969 (base 60)"
        + quote
        + 'aspect_ratio: "16:9"',
        "m.yaml:7: vars.sku: YAML read 0123 as the number 83" + quote + 'sku: "0123"',
    ]
    assert [j.line for j in jobs] == [8]


def test_yaml_problems_point_at_their_field_line(write: Write, parse: Parse) -> None:
    text = (
        "jobs:\n"
        "  - &base\n"
        "    prompt: p\n"
        "    input_image: images/a.png\n"
        "  - <<: *base\n"
        "    resolution: 8k\n"
        "    duration: 99\n"
    )
    _, problems = parse(write("m.yaml", text))
    assert [(p.line, p.field) for p in problems] == [(6, "resolution"), (7, "duration")]


def test_every_problem_reported_at_once(write: Write, parse: Parse) -> None:
    path = write(
        "bad.csv",
        "prompt,input_image,resolution,duration\n"
        "ok,images/a.png,720p,5\n"
        ",images/a.png,720p,5\n"
        "p,images/missing.png,9000p,2\n"
        "ok,images/a.png,720p,5\n",
    )
    jobs, problems = parse(path)
    lines = [(p.line, p.field) for p in problems]
    assert (3, "prompt") in lines
    assert (4, "input_image") in lines and (4, "resolution") in lines and (4, "duration") in lines
    assert (5, "output") in lines  # same params as line 2: duplicate output key and id
    assert all(str(p).startswith(f"{path}:") for p in problems)
    assert [j.line for j in jobs] == [2]


def test_output_keys_too_long_are_refused_by_row(write: Write, parse: Parse) -> None:
    long_name = "n" * 241
    path = write(
        "long.csv",
        "id,prompt,input_image,output\n"
        "a,p,images/a.png,ok.mp4\n"
        f"b,p,images/a.png,{long_name}.mp4\n"
        f"c,p,images/a.png,{'/'.join(['d' * 200] * 5)}/{{id}}.mp4\n",
    )
    jobs, problems = parse(path)
    assert [j.id for j in jobs] == ["a"]
    assert [(p.line, p.field) for p in problems] == [(3, "output"), (4, "output")]
    assert "segment" in problems[0].message and "longer than" in problems[1].message
    # Under an S3 prefix, less is left for the key.
    path.write_text(
        f"id,prompt,input_image,output\nc,p,images/a.png,{'/'.join(['d' * 200] * 4)}.mp4\n"
    )
    assert parse(path)[1] == []
    _, problems = parse(path, max_output_key_bytes=700)
    assert [(p.line, p.field) for p in problems] == [(2, "output")]
    assert "longer than 700" in problems[0].message


def test_outputs_in_each_others_way_are_refused_naming_both_rows(
    write: Write, parse: Parse
) -> None:
    """A directory store cannot hold ``x.mp4`` and ``x.mp4/y.mp4``, nor ``a.mp4`` (with
    its sidecar ``a.json``) and ``a.json/b.mp4``: the second delivery failed with "File
    exists" and its paid clip was lost. Whichever comes first, the second is refused."""
    files = write(
        "files.csv",
        "id,prompt,input_image,output\n"
        "x,p,images/a.png,x.mp4\n"
        "a,p,images/a.png,a.mp4\n"
        "d,p,images/a.png,deep/er/z.mp4\n",
    )
    folders = write(
        "folders.csv",
        "id,prompt,input_image,output\n"
        "y,p,images/a.png,x.mp4/y.mp4\n"
        "b,p,images/a.png,a.json/b.mp4\n"
        "g,p,images/a.png,deep/er/z.json/w.mp4\n"
        # Near misses: another name, or a folder shared, is no clash.
        "ok1,p,images/a.png,x/y.mp4\n"
        "ok2,p,images/a.png,deep.mp4\n"
        "ok3,p,images/a.png,deep/er.mp4\n",
    )
    jobs, problems = parse(files, folders)
    assert sorted(j.id for j in jobs) == ["a", "d", "ok1", "ok2", "ok3", "x"]
    assert [str(p) for p in problems] == [
        f"{folders}:2: output: output key 'x.mp4/y.mp4' needs 'x.mp4' as a folder, "
        f"but it is the clip of the output at {files}:2",
        f"{folders}:3: output: output key 'a.json/b.mp4' needs 'a.json' as a folder, "
        f"but it is the sidecar of the output at {files}:3",
        f"{folders}:4: output: output key 'deep/er/z.json/w.mp4' needs 'deep/er/z.json' "
        f"as a folder, but it is the sidecar of the output at {files}:4",
    ]
    # The folders first: then the files are refused, naming the row of the folder.
    jobs, problems = parse(folders, files)
    assert sorted(j.id for j in jobs) == ["b", "g", "ok1", "ok2", "ok3", "y"]
    assert [str(p) for p in problems] == [
        f"{files}:2: output: output key 'x.mp4' puts its clip at 'x.mp4', "
        f"a folder of the output at {folders}:2",
        f"{files}:3: output: output key 'a.mp4' puts its sidecar at 'a.json', "
        f"a folder of the output at {folders}:3",
        f"{files}:4: output: output key 'deep/er/z.mp4' puts its sidecar at "
        f"'deep/er/z.json', a folder of the output at {folders}:4",
    ]


def test_duplicate_ids_refused_across_manifests(write: Write, parse: Parse) -> None:
    a = write("a.yaml", "jobs:\n  - {id: x, prompt: p, input_image: images/a.png}\n")
    b = write("b.yaml", "jobs:\n  - {id: x, prompt: q, input_image: images/a.png, output: other}\n")
    _, problems = parse(a, b)
    assert [p.field for p in problems] == ["id"]
    assert f"duplicate id 'x' (first at {a}:2)" in problems[0].message


def test_unused_csv_column_is_a_warning(write: Write, check_one: Callable[..., object]) -> None:
    path = write("w.csv", "prompt,input_image,notes,sku\np {sku},images/a.png,hello,S1\n")
    result = check_one(path)
    assert result.errors == []  # type: ignore[attr-defined]
    warnings = msgs(result.warnings)  # type: ignore[attr-defined]
    assert warnings == [
        f"{path}:1: notes: warning: column is neither a job field nor used by a template; ignored"
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("e.csv", b"", ":0: file: is empty"),
        ("e.yaml", b"\n\n  \n", ":0: file: is empty"),
        ("b.csv", b"prompt,input_image\n\x00\x01\x02binary", ":0: file: is binary"),
        (
            "u.csv",
            b"prompt,input_image\np\xff\xfe,images/a.png\n",
            ":2: encoding: not UTF-8 (byte 0xff)",
        ),
        ("u.yaml", b"jobs:\n  - prompt: caf\xe9\n", ":2: encoding: not UTF-8 (byte 0xe9)"),
        ("t.csv", b'prompt,input_image\n"unterminated,images/a.png\n', ":2: csv:"),
        ("t.yaml", b"jobs:\n  - prompt: [unclosed\n", ": yaml:"),
        ("l.yaml", b"- a\n- b\n", ":1: file: must be a mapping"),
        ("n.yaml", b"name: x\n", ":1: jobs: missing"),
        ("k.yaml", b"jobz: []\n", ":1: jobz: unknown top-level key (did you mean 'jobs'?)"),
        ("h.csv", b"sku,name\n1,2\n", ":1: header: needs columns prompt and input_image"),
        ("d.csv", b"prompt,prompt,input_image\n", ":1: header: column 'prompt' appears twice"),
        ("r.csv", b"prompt,input_image\np,images/a.png,extra\n", ":2: row: has 3 cells"),
        ("x.txt", b"prompt,input_image\n", ":0: file: unknown manifest type"),
        ("py.yaml", b"jobs: !!python/object/apply:os.system ['true']\n", ":1: yaml: tag"),
    ],
)
def test_bad_files_give_one_clear_line(
    write: Write, parse: Parse, name: str, content: bytes, expected: str
) -> None:
    jobs, problems = parse(write(name, content))
    assert jobs == []
    assert problems, "a bad file must give a problem"
    assert any(expected in str(p) for p in problems), msgs(problems)


def test_missing_file_and_directory(tmp_path: Path, parse: Parse) -> None:
    _, problems = parse(tmp_path / "nope.csv")
    assert "no such file" in str(problems[0])
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    _, problems = parse(folder)
    assert "is a directory" in str(problems[0])


def test_size_limit(write: Write, parse: Parse) -> None:
    path = write("big.csv", "prompt,input_image\n" + "p,images/a.png\n" * 100)
    _, problems = parse(path, max_manifest_bytes=100)
    assert "above the limit of 100" in str(problems[0])


def test_yaml_size_limit_is_tighter_than_csv(write: Write, parse: Parse) -> None:
    rows = "".join(f"  - {{prompt: p{i}, input_image: images/a.png}}\n" for i in range(5))
    path = write("m.yaml", "jobs:\n" + rows)
    _, problems = parse(path, max_yaml_manifest_bytes=100)
    assert msgs(problems) == [
        f"{path}:0: file: is {path.stat().st_size} bytes, above the limit of 100 for a YAML "
        "manifest (SEEDQ_MAX_YAML_MANIFEST_BYTES), which is read whole; a CSV manifest is "
        "streamed and may be larger"
    ]
    csv = write(
        "m.csv", "prompt,input_image\n" + "".join(f"p{i},images/a.png\n" for i in range(20))
    )
    assert parse(csv, max_yaml_manifest_bytes=100)[1] == []
    assert Settings().max_yaml_manifest_bytes == 16 * 1024 * 1024  # the production default


def test_yaml_size_limit_reaches_every_reader() -> None:
    """``seedq validate``/``submit`` and the scheduled submit read it from the settings."""
    from cli.produce import read_options
    from seedq.schedules import Schedule
    from worker.scheduled import _read_options

    settings = Settings(max_yaml_manifest_bytes=12345)
    schedule = Schedule(name="s", cron="0 * * * *", manifest="https://example.com/m.yaml")
    assert read_options(settings, [], None).max_yaml_manifest_bytes == 12345
    assert _read_options(schedule, settings).max_yaml_manifest_bytes == 12345


def _list_manifest(write: Write, values: int) -> Path:
    listed = ", ".join(["1"] * values)
    jobs = "jobs:\n  - {prompt: p, input_image: images/a.png}\n"
    return write(f"list-{values}.yaml", f"vars: {{v: [{listed}]}}\n{jobs}")


def test_yaml_with_too_many_values_is_refused(write: Write, parse: Parse) -> None:
    """Counted on the parser's events, before a node tree is built: a 600 KB list of
    single digits would otherwise hold hundreds of MB as nodes."""
    _, problems = parse(_list_manifest(write, YAML_MAX_NODES))
    assert [(p.line, p.field) for p in problems] == [(1, "yaml")]
    assert problems[0].message == (
        f"has more than {YAML_MAX_NODES} values (keys, values, lists and maps); "
        "split it, or use a CSV manifest for long job lists"
    )


def test_yaml_values_bound_is_exact(
    write: Write, parse: Parse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The top map, vars, its map, v, the list and its values, jobs, its list, the job's
    map with two keys and two values: 12 nodes and the list's values."""
    monkeypatch.setattr(yaml_reader, "YAML_MAX_NODES", 112)
    jobs, problems = parse(_list_manifest(write, 100))
    assert problems == [] and len(jobs) == 1
    _, problems = parse(_list_manifest(write, 101))
    assert "has more than 112 values" in msgs(problems)[0]


def test_alias_bomb_refused_quickly(write: Write, parse: Parse) -> None:
    lines = ["vars:", "  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = f"*a{i - 1}"
        lines.append(f"  a{i}: &a{i} [{', '.join([prev] * 9)}]")
    lines.append("jobs: *a11")
    path = write("bomb.yaml", "\n".join(lines) + "\n")
    started = time.monotonic()
    _, problems = parse(path)
    assert time.monotonic() - started < 1.0
    assert any("alias bomb" in p.message for p in problems), msgs(problems)


def test_alias_bomb_in_jobs_refused_quickly(write: Write, parse: Parse) -> None:
    anchors = [
        "jobs:",
        "  - prompt: &a0 [x, x, x, x, x, x, x, x, x, x]",
        "    input_image: images/a.png",
    ]
    for i in range(1, 10):
        anchors.append(f"  - prompt: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
        anchors.append("    input_image: images/a.png")
    text = "\n".join(anchors) + "\n"
    # Refused by the expansion budget (a count, not a clock): 10**10 values never built.
    _, problems = parse(write("bomb3.yaml", text))
    assert any("alias bomb" in p.message for p in problems), msgs(problems)


def test_yaml_merge_keys_and_vars(write: Write, parse: Parse) -> None:
    text = (
        "output: 'cat/{sku}.mp4'\n"
        "vars: {brand: Acme}\n"
        "jobs:\n"
        "  - &common\n"
        "    prompt: '{brand} {sku}'\n"
        "    input_image: images/a.png\n"
        "    vars: {sku: S1}\n"
        "  - <<: *common\n"
        "    vars: {sku: S2}\n"
    )
    jobs, problems = parse(write("merge.yaml", text))
    assert problems == []
    assert [j.output_key for j in jobs] == ["cat/S1.mp4", "cat/S2.mp4"]
    assert [j.params["prompt"] for j in jobs] == ["Acme S1", "Acme S2"]


def test_unknown_model(write: Write, parse: Parse) -> None:
    _, problems = parse(
        write("m.yaml", "model: no-such-model\njobs:\n  - {prompt: p, input_image: images/a.png}\n")
    )
    assert "unknown model 'no-such-model'" in str(problems[0])


def test_mini_model_has_no_1080p(write: Write, parse: Parse) -> None:
    _, problems = parse(
        write("m.yaml", "jobs:\n  - {prompt: p, input_image: images/a.png, resolution: 1080p}\n"),
        model_override="bytedance-seedance-2-0-mini-image-to-video",
    )
    assert "must be one of 480p, 720p" in str(problems[0])


def test_s3_and_url_images_pass(write: Write, parse: Parse) -> None:
    jobs, problems = parse(
        write(
            "m.csv",
            "prompt,input_image,tail_image_url\n"
            "p,s3://bucket/in/a.png,https://cdn.example.com/b.png\n",
        ),
        s3_allow=parse_s3_allow("bucket/in"),
    )
    assert problems == []
    assert jobs[0].params["input_image"] == "s3://bucket/in/a.png"
    assert jobs[0].params["tail_image_url"] == "https://cdn.example.com/b.png"


def test_unsafe_image_refs_are_row_numbered_problems(
    write: Write, parse: Parse, tmp_path: Path
) -> None:
    (tmp_path / "images" / "y.png").symlink_to(tmp_path.parent)
    jobs, problems = parse(
        write(
            "m.csv",
            "prompt,input_image,tail_image_url\n"
            "p,s3://outputs-bkt/run/clip.mp4,\n"
            f"p,{tmp_path / 'images' / 'a.png'},\n"
            "p,images/a.png,../../etc/hosts.png\n"
            "p,images/y.png,s3://inputs-bkt/in/b.png\n",
        ),
        s3_allow=parse_s3_allow("inputs-bkt/in"),
    )
    assert jobs == []
    shown = [str(p).removeprefix(f"{tmp_path}/") for p in problems]
    assert shown[0].startswith("m.csv:2: input_image: s3://outputs-bkt/run/clip.mp4 is outside")
    assert "SEEDQ_INPUT_S3_ALLOW (inputs-bkt/in)" in shown[0]
    assert (
        shown[1]
        == "m.csv:3: input_image: local image must be a path relative to the manifest's folder"
    )
    assert shown[2].startswith("m.csv:4: tail_image_url: local image is outside")
    assert shown[3].startswith("m.csv:5: input_image: local image")
    assert len(shown) == 4


def test_s3_images_are_refused_without_an_allowlist(
    write: Write, parse: Parse, tmp_path: Path
) -> None:
    _, problems = parse(write("m.csv", "prompt,input_image\np,s3://bucket/in/a.png\n"))
    assert [str(p).removeprefix(f"{tmp_path}/") for p in problems] == [
        "m.csv:2: input_image: s3:// inputs are refused: SEEDQ_INPUT_S3_ALLOW is empty; set it "
        "to the buckets (bucket or bucket/prefix, comma-separated) input images may come from"
    ]


def test_private_urls_allowed_by_setting(write: Write, parse: Parse) -> None:
    path = write("m.csv", "prompt,input_image\np,http://127.0.0.1:8000/a.png\n")
    assert parse(path)[1]
    jobs, problems = parse(path, allow_private_urls=True)
    assert problems == [] and len(jobs) == 1


def test_plan_counts_seconds_and_cost(write: Write, check_one: Callable[..., object]) -> None:
    path = write(
        "p.csv",
        "prompt,input_image,resolution,duration,generate_audio\n"
        "a,images/a.png,720p,5,no\n"
        "b,images/a.png,1080p,auto,no\n"
        "c,images/a.png,720p,4,yes\n",
    )
    result = check_one(path)
    plan = result.plan  # type: ignore[attr-defined]
    total = plan.total
    assert (total.jobs, total.seconds, total.auto_jobs) == (3, 5 + 10 + 4, 1)
    # shipped pricing by resolution: 720p 0.20/s (audio too: no with-audio price), 1080p 0.45/s
    assert plan.by_resolution["720p"].cost == pytest.approx(5 * 0.20 + 4 * 0.20)
    assert plan.by_resolution["1080p"].cost == pytest.approx(10 * 0.45)


def test_an_image_shared_by_rows_is_checked_once_and_refused_on_each(
    write: Write, parse: Parse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local image costs two realpaths to confine: checked once per distinct value in
    a manifest, while a refused one is still reported on every row that names it."""
    from producer import jobs

    checked: list[str] = []
    real = jobs.parse_image_ref  # type: ignore[attr-defined]

    def counted(raw: str, **kw: object) -> object:
        checked.append(raw)
        return real(raw, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "parse_image_ref", counted)
    rows = "".join(f"p{i},images/a.png\n" for i in range(30)) + "q,../x.png\nr,../x.png\n"
    found, problems = parse(write("m.csv", "prompt,input_image\n" + rows))
    assert len(found) == 30 and len({j.params["input_image"] for j in found}) == 1
    assert sorted(checked) == ["../x.png", "images/a.png"]
    assert [(p.line, p.field) for p in problems] == [(32, "input_image"), (33, "input_image")]
    assert problems[0].message == problems[1].message


def test_the_checked_images_kept_are_bounded(
    write: Write, parse: Parse, monkeypatch: pytest.MonkeyPatch
) -> None:
    from producer import jobs

    monkeypatch.setattr(jobs, "CHECKED_REFS_KEPT", 3)
    kept: list[int] = []
    real = jobs.JobContext.image_ref

    def watched(ctx: jobs.JobContext, raw: str) -> str:
        kept.append(len(ctx.checked_refs))
        return real(ctx, raw)

    monkeypatch.setattr(jobs.JobContext, "image_ref", watched)
    rows = "".join(f"p{i},https://example.com/{i}.png\n" for i in range(10))
    found, problems = parse(write("m.csv", "prompt,input_image\n" + rows))
    assert len(found) == 10 and not problems
    assert max(kept) == 3


def test_a_jobs_checks_build_the_models_parameter_table_once_each(
    write: Write, parse: Parse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ModelInfo.properties`` is rebuilt on each read: read once for the defaults and
    once for the schema check, not once per parameter."""
    from seedq.modelinfo import ModelInfo

    reads: list[int] = []
    real = ModelInfo.properties

    def counted(model: ModelInfo) -> dict[str, dict[str, object]]:
        reads.append(1)
        return real.fget(model)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(ModelInfo, "properties", property(counted))
    rows = "".join(f"p{i},images/a.png\n" for i in range(5))
    found, _ = parse(write("m.csv", "prompt,input_image\n" + rows))
    assert len(found) == 5
    assert len(reads) <= 2 * 5


def test_a_template_shared_by_rows_is_parsed_once(write: Write, parse: Parse) -> None:
    from seedq.refs import template_names

    template_names.cache_clear()
    rows = "".join(f"SKU-{i},images/a.png\n" for i in range(20))
    found, problems = parse(
        write("m.csv", "sku,input_image\n" + rows),
        sets={"prompt": "a turntable of {sku}", "output": "catalog/{sku}.mp4"},
    )
    assert len(found) == 20 and not problems
    assert template_names.cache_info().misses <= 3  # each distinct template once


@pytest.mark.parametrize("batch", [1, 2, 3, 500])
def test_duplicates_and_clashes_are_found_whatever_the_guards_batch(
    write: Write, parse: Parse, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """Checked a batch at a time, against what earlier batches took and against each
    other inside one: the same problems, in the same order, as one by one."""
    from producer import plan

    monkeypatch.setattr(plan, "GUARD_BATCH", batch)
    path = write(
        "m.csv",
        "id,prompt,input_image,output\n"
        "a,p,images/a.png,x.mp4\n"
        "b,p,images/a.png,x.mp4\n"  # the output of line 2
        "a,q,images/a.png,y.mp4\n"  # the id of line 2
        "c,p,images/a.png,x.mp4/z.mp4\n"  # x.mp4 as a folder
        "d,p,images/a.png,f/g.mp4\n"
        "e,p,images/a.png,f.mp4\n"  # no clash: f, not f.mp4
        "f,p,images/a.png,f/g.mp4/h.mp4\n"  # the clip of line 6 as a folder
        "g,p,images/a.png,f/g.json\n",  # the sidecar of line 6
    )
    jobs, problems = parse(path)
    assert [j.id for j in jobs] == ["a", "d", "e"]
    assert [(p.line, p.field) for p in problems] == [
        (3, "output"),
        (4, "id"),
        (5, "output"),
        (8, "output"),
        (9, "output"),
    ]
    assert "(first at" in problems[0].message and f"{path}:2" in problems[1].message
    assert "needs 'x.mp4' as a folder" in problems[2].message
    assert "needs 'f/g.mp4' as a folder" in problems[3].message


def test_the_guard_runs_a_few_statements_a_batch_not_per_job(
    write: Write, parse: Parse, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from producer import manifest

    statements: list[str] = []
    connect = sqlite3.connect

    def traced(path: str) -> sqlite3.Connection:
        db = connect(path)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(manifest.sqlite3, "connect", traced)  # type: ignore[attr-defined]
    rows = "".join(f"p{i},images/a.png,out/{i}.mp4\n" for i in range(1200))
    jobs, problems = parse(write("m.csv", "prompt,input_image,output\n" + rows))
    assert len(jobs) == 1200 and not problems
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(statements) < 60 + len(inserts)  # a few per batch of 500, then the rows
