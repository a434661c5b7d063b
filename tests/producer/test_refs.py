from __future__ import annotations

import sys
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from seedq.refs import (
    MAX_OUTPUT_SEGMENT_BYTES,
    ImageRef,
    RefError,
    check_http_url,
    check_output_key,
    has_chars_of,
    is_private_address,
    max_output_key_bytes,
    name_suffix,
    parse_image_ref,
    parse_s3_allow,
    render,
    template_names,
)


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("100.64.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:7f00:1", True),
        ("::127.0.0.1", True),
        ("64:ff9b::a9fe:a9fe", True),
        ("2002:a00:1::", True),
        ("fd00::1", True),
        ("fe80::1%eth0", True),
        ("ff02::1", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("2130706433", True),
        ("0x7f000001", True),
        ("0177.0.0.1", True),
        ("0x7f.0.0.1", True),
        ("127.1", True),
        ("10.1", True),
        ("0xa9.0xfe.0xa9.0xfe", True),
        ("127.0.0.1.", True),
        ("134744072", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("8.8.8.8", False),
        ("172.32.0.1", False),
        ("2606:4700::1111", False),
        ("example.com", False),
    ],
)
def test_is_private_address(host: str, private: bool) -> None:
    assert is_private_address(host) is private


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/a.png",
        "http://93.184.216.34/a.jpg",
        "https://example.com:8443/path/a.webp?x=1",
    ],
)
def test_http_urls_allowed(url: str) -> None:
    assert check_http_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/a.png", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://127.0.0.1/a.png", "loopback"),
        ("http://localhost:8000/a.png", "this machine"),
        ("http://foo.localhost/a.png", "this machine"),
        ("http://10.0.0.5/a.png", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]:80/a.png", "loopback"),
        ("http://user:secret@example.com/a.png", "user name or password"),
        ("http:///a.png", "no host"),
        ("http://2130706433/a.png", "loopback"),
        ("http://0177.0.0.1/a.png", "loopback"),
        ("http://0x7f.1/a.png", "loopback"),
        ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
        ("http://[fc00::1]/a.png", "private"),
        ("http://[fe80::1%25eth0]/a.png", "link-local"),
        ("http://１２７.０.０.１/a.png", "loopback"),
        ("http://LOCALHOST./a.png", "this machine"),
        ("http://1.2.3.4.5/a.png", "neither a name nor a valid IP"),
        ("http://08.0.0.1/a.png", "neither a name nor a valid IP"),
        ("http://user@example.com/a.png", "user name or password"),
        ("http://:pw@example.com/a.png", "user name or password"),
        ("javascript:alert(1)", "only http and https"),
        ("http://example.com:99999/a.png", "invalid port"),
    ],
)
def test_http_urls_refused(url: str, why: str) -> None:
    with pytest.raises(RefError, match=why):
        check_http_url(url, allow_private=False)


def test_private_urls_allowed_when_setting_on() -> None:
    assert check_http_url("http://127.0.0.1:9/a.png", allow_private=True)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a.mp4", "a.mp4"),
        ("catalog/SKU-1.mp4", "catalog/SKU-1.mp4"),
        ("catalog/SKU-1", "catalog/SKU-1.mp4"),
        ("deep/er/x.MP4", "deep/er/x.MP4"),
        ("ünïcode/名前.mp4", "ünïcode/名前.mp4"),
    ],
)
def test_output_keys_ok(key: str, expected: str) -> None:
    assert check_output_key(key) == expected


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("../escape.mp4", r"\.\. segments"),
        ("a/../../b.mp4", r"\.\. segments"),
        ("./a.mp4", r"\. or \.\."),
        ("/abs/a.mp4", "relative"),
        ("C:/x.mp4", "relative"),
        ("a\\b.mp4", "separator"),
        ("a\nb.mp4", "control"),
        ("a\x00b.mp4", "control"),
        ("a\u202eb.mp4", "control"),
        ("a\u2028b.mp4", "control"),
        ("a\x85b.mp4", "control"),
        ("a\tb.mp4", "control"),
        ("..", r"\.\. segments"),
        ("a/..", r"\.\. segments"),
        ("a/./b.mp4", r"\. or \.\."),
        ("//host/a.mp4", "relative"),
        ("a\\..\\b.mp4", "separator"),
        ("a//b.mp4", "empty or space-padded"),
        ("a/ b.mp4", "empty or space-padded"),
        ("a.mov", "must end in .mp4"),
        ("x" * 1000 + ".mp4", "segment"),
        ("/".join(["d" * 200] * 5) + ".mp4", "longer than 984"),
    ],
)
def test_output_keys_refused(key: str, why: str) -> None:
    with pytest.raises(RefError, match=why):
        check_output_key(key)


# -- lengths (issue 13): a name the store cannot write is paid for and then lost --------


def test_output_key_segment_is_limited_in_utf8_bytes() -> None:
    """241-255 byte names passed, and only the directory store's temporary file
    (".<name>.<random>.part") then failed. The limit leaves room for every derived name,
    and counts bytes: 72 CJK characters are 216 bytes."""
    limit = MAX_OUTPUT_SEGMENT_BYTES
    assert limit <= 255 - 37
    assert check_output_key("d/" + "a" * (limit - 4) + ".mp4")
    assert check_output_key("b" * limit + "/x.mp4")
    for key in ("a" * (limit - 3) + ".mp4", "a" * 241 + ".mp4", "名" * 72 + ".mp4"):
        with pytest.raises(RefError, match=f"segment .* bytes .*at most {limit}"):
            check_output_key(key)
    with pytest.raises(RefError, match="segment"):
        check_output_key("c" * (limit + 1) + "/x.mp4")  # a folder's name too


@pytest.mark.parametrize(
    ("output", "limit"),
    [
        ("/srv/videos", 984),
        ("s3://bucket", 984),
        ("s3://bucket/", 984),
        ("s3://bucket/runs/2024", 984 - len("runs/2024/")),
        ("S3://bucket/" + "p" * 500, 984 - 501),
    ],
)
def test_output_key_total_leaves_room_for_the_s3_prefix(output: str, limit: int) -> None:
    assert max_output_key_bytes(output) == limit
    key = "/".join(["d" * 100] * 10)[: limit - 4] + ".mp4"
    assert len(key) == limit and check_output_key(key, max_bytes=limit) == key
    with pytest.raises(RefError, match=f"is {limit + 1} bytes"):
        check_output_key("e" + key, max_bytes=limit)


def test_templates() -> None:
    assert template_names("a {x} b {y_2}") == {"x", "y_2"}
    assert render("{a}-{b}", {"a": "1", "b": "2"}) == "1-2"
    assert render("literal {{braces}}", {}) == "literal {braces}"


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{x.__class__}", "plain"),
        ("{x[0]}", "plain"),
        ("{x!r}", "plain"),
        ("{x:>10}", "plain"),
        ("{0}", "plain"),
        ("{", "bad template"),
        ("{missing}", "unknown placeholder"),
    ],
)
def test_templates_refused(template: str, why: str) -> None:
    with pytest.raises(RefError, match=why):
        render(template, {"x": "1"})


def test_local_image_refs(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    ref = parse_image_ref("a.png", base_dir=tmp_path, allow_private=False)
    assert ref.kind == "file"
    assert ref.value == str((tmp_path / "a.png").resolve())
    grants = parse_s3_allow("bucket")
    ref = parse_image_ref(
        "s3://bucket/k/a.png", base_dir=tmp_path, allow_private=False, s3_allow=grants
    )
    assert ref.kind == "s3"
    with pytest.raises(RefError, match="no such file"):
        parse_image_ref("missing.png", base_dir=tmp_path, allow_private=False)
    with pytest.raises(RefError, match=r"\.jpg"):
        parse_image_ref("notes.txt", base_dir=tmp_path, allow_private=False)
    with pytest.raises(RefError, match="s3://bucket/key"):
        parse_image_ref("s3://bucket", base_dir=tmp_path, allow_private=False)
    with pytest.raises(RefError, match="unsupported scheme"):
        parse_image_ref("gopher://x/a.png", base_dir=tmp_path, allow_private=False)


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    """A manifest's folder with images/a.png, beside a secret.png it must not reach."""
    folder = tmp_path / "manifests"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "images" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    return folder


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("/etc/hostname.png", "relative to the manifest's folder"),
        ("{secret}", "relative to the manifest's folder"),
        ("~/a.png", "relative to the manifest's folder"),
        ("../secret.png", "outside"),
        ("images/../../secret.png", "outside"),
        ("images/out.png", "outside"),  # a symlink leading out of the folder
        ("images/loop.png", "symbolic link loop"),
    ],
)
def test_local_images_are_confined_to_the_manifests_folder(
    manifest_dir: Path, value: str, why: str
) -> None:
    (manifest_dir / "images" / "out.png").symlink_to(manifest_dir.parent / "secret.png")
    (manifest_dir / "images" / "loop.png").symlink_to(manifest_dir / "images" / "loop.png")
    value = value.format(secret=manifest_dir.parent / "secret.png")
    with pytest.raises(RefError, match=why):
        parse_image_ref(value, base_dir=manifest_dir, allow_private=False)


def test_a_link_inside_the_folder_is_kept_as_its_real_path(manifest_dir: Path) -> None:
    (manifest_dir / "latest.png").symlink_to(manifest_dir / "images" / "a.png")
    ref = parse_image_ref("latest.png", base_dir=manifest_dir, allow_private=False)
    assert ref.value == str((manifest_dir / "images" / "a.png").resolve())


def test_an_input_root_widens_the_confinement(manifest_dir: Path) -> None:
    root = manifest_dir.parent
    ref = parse_image_ref("../secret.png", base_dir=manifest_dir, allow_private=False, root=root)
    assert ref.value == str((root / "secret.png").resolve())
    with pytest.raises(RefError, match="outside"):
        parse_image_ref("a.png", base_dir=root, allow_private=False, root=manifest_dir / "images")


@pytest.mark.parametrize(
    ("allow", "uri", "why"),
    [
        ("", "s3://inputs-bkt/a.png", "SEEDQ_INPUT_S3_ALLOW is empty"),
        ("inputs-bkt", "s3://other-bkt/a.png", "outside SEEDQ_INPUT_S3_ALLOW"),
        ("inputs-bkt/in", "s3://inputs-bkt/a.png", "outside SEEDQ_INPUT_S3_ALLOW"),
        ("inputs-bkt/in", "s3://inputs-bkt/inner/a.png", "outside SEEDQ_INPUT_S3_ALLOW"),
        ("inputs-bkt/in", "s3://inputs-bkt/in/../x.png", r"\.\. segment"),
        ("inputs-bkt/in", "s3://inputs-bkt/in//x.png", "empty"),
        ("inputs-bkt", "s3://inputs-bkt/a.png?versionId=1", r"\? or #"),
        ("inputs-bkt", "s3://INPUTS-BKT/a.png", "outside SEEDQ_INPUT_S3_ALLOW"),
        ("inputs-bkt", "s3://inputs-bkt:9000/a.png", "outside SEEDQ_INPUT_S3_ALLOW"),
    ],
)
def test_s3_inputs_need_the_allowlist(tmp_path: Path, allow: str, uri: str, why: str) -> None:
    grants = parse_s3_allow(allow)
    with pytest.raises(RefError, match=why):
        parse_image_ref(uri, base_dir=tmp_path, allow_private=False, s3_allow=grants)


def test_s3_inputs_under_the_allowlist_pass(tmp_path: Path) -> None:
    grants = parse_s3_allow(" other-bkt , s3://inputs-bkt/in/ ")
    assert [str(g) for g in grants] == ["other-bkt", "inputs-bkt/in"]
    for uri in ("s3://inputs-bkt/in/a.png", "s3://inputs-bkt/in/x/y.jpg", "s3://other-bkt/z.png"):
        ref = parse_image_ref(uri, base_dir=tmp_path, allow_private=False, s3_allow=grants)
        assert ref == ImageRef("s3", uri)


@pytest.mark.parametrize("entry", ["Bad_Bucket", "ab", "bkt-1/in/../x", "-bkt", "bkt:9000"])
def test_bad_allowlist_entries_are_refused(entry: str) -> None:
    with pytest.raises(RefError, match=r"bucket name|segment"):
        parse_s3_allow(f"good-bkt,{entry}")


def test_local_image_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as fh:
        fh.truncate(30 * 1024 * 1024 + 1)
    with pytest.raises(RefError, match="30 MB"):
        parse_image_ref("big.png", base_dir=tmp_path, allow_private=False)


@pytest.mark.parametrize(
    "value",
    ["../../etc/passwd", "..", "/abs", "a\nb", "a\x00b", "a\\..\\b", "x/../../y", "a\u2028b"],
)
def test_hostile_manifest_values_cannot_escape_the_output_prefix(value: str) -> None:
    """An output template filled with a spreadsheet cell: the rendered key is checked."""
    with pytest.raises(RefError):
        check_output_key(render("{sku}/clip.mp4", {"sku": value}))
    with pytest.raises(RefError):
        check_output_key(render("{sku}", {"sku": value}))


SCREENED = ("Cc", "Cf", "Zl", "Zp")


def test_no_printable_character_is_of_a_screened_category() -> None:
    """The fast path of has_chars_of: a text str.isprintable accepts holds none of them.
    Every code point, so a Unicode update that broke it would fail here."""
    wrong = [
        hex(cp)
        for cp in range(sys.maxunicode + 1)
        if chr(cp).isprintable() and unicodedata.category(chr(cp)) in SCREENED
    ]
    assert wrong == []


@given(st.text())
def test_has_chars_of_answers_as_reading_every_character(text: str) -> None:
    assert has_chars_of(text, SCREENED) == any(unicodedata.category(ch) in SCREENED for ch in text)


@given(st.text(alphabet=st.sampled_from("ab.c/ ")))
def test_name_suffix_is_the_suffix_pathlib_reads(name: str) -> None:
    last = name.split("/")[-1]
    assert name_suffix(last) == PurePosixPath(last).suffix or last in ("", ".", "..")
