"""Image references, output keys and templates: the pure safety rules of a manifest.

Everything here is offline: a literal address is judged here, a host name is judged
again by the worker where it resolves and fetches it (DNS can change in between).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
MAX_IMAGE_BYTES = 30 * 1024 * 1024
# What an output key may be, in UTF-8 bytes. Every name a store derives from a key must
# fit too: the sidecar ("x.json"), the directory store's temporary files
# (".<name>.<8 random>.part", storage.local) and the quarantined copy with its reason
# ("quarantine/<stem>.<16 hex>.mp4" and ".json", worker.delivery). The longest of these,
# a quarantined copy's reason's temporary file, is 37 bytes longer than the key's last
# segment; a name longer than a filesystem's 255 would be paid for and never stored.
NAME_MAX_BYTES = 255  # one name on ext4, XFS, Btrfs, APFS, NTFS
DERIVED_NAME_ROOM_BYTES = 40
MAX_OUTPUT_SEGMENT_BYTES = NAME_MAX_BYTES - DERIVED_NAME_ROOM_BYTES
MAX_STORE_KEY_BYTES = 1024  # S3's limit on a whole object key, its prefix included
DERIVED_KEY_ROOM_BYTES = 40  # "quarantine/" + ".<16 hex>" + ".json"
MAX_OUTPUT_KEY_BYTES = MAX_STORE_KEY_BYTES - DERIVED_KEY_ROOM_BYTES  # under no prefix
LOCAL_HOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
VIDEO_SUFFIX = ".mp4"

RefKind = Literal["url", "s3", "file"]


class RefError(ValueError):
    """A reference or key that breaks a safety rule; the message says which."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    kind: RefKind
    value: str  # the URL, the s3:// URI, or a local file's real path (no symlink in it)


def parse_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` spells, or None for a name.

    Besides the standard forms this reads what ``inet_aton`` (and so curl, browsers and
    many HTTP stacks) reads as IPv4: one to four parts, each decimal, octal (leading 0)
    or hex (0x), so ``2130706433``, ``0177.0.0.1``, ``0x7f.1`` and ``127.1`` are all
    127.0.0.1. A check that missed these would let them through as "names".
    """
    text = host.strip("[]").split("%")[0].rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    numbers = [_ipv4_part(part) for part in text.split(".")]
    if not 1 <= len(numbers) <= 4 or None in numbers:
        return None
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int | None:
    """One part of a legacy IPv4 address: 0x-hex, 0-octal or decimal; None otherwise."""
    base, digits = 10, part
    if part[:2].lower() == "0x":
        base, digits = 16, part[2:] or "0"
    elif len(part) > 1 and part.startswith("0"):
        base, digits = 8, part[1:]
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


def looks_numeric(host: str) -> bool:
    """A host whose last label is a number: an address to a URL parser, never a name."""
    last = host.strip("[]").rstrip(".").rsplit(".", 1)[-1].lower()
    return last.isdigit() or (
        last.startswith("0x") and all(c in string.hexdigits for c in last[2:])
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_private_address(host: str) -> bool:
    """Loopback, private, link-local, reserved, multicast or unspecified (v4 or v6),
    including an IPv4 address of those kinds inside an IPv6 one (mapped, compatible,
    6to4, NAT64) and the legacy numeric forms :func:`parse_address` reads."""
    addr = parse_address(host)
    if addr is None:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        # An IPv4 address carried in IPv6 is reached as that IPv4 address: judge it.
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and (addr in _NAT64 or int(addr) >> 32 == 0):
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            return _is_private(embedded)
    return _is_private(addr)


def _is_private(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not addr.is_global or addr.is_multicast or addr.is_reserved


def check_url_host(host: str, *, allow_private: bool) -> None:
    """Refuse hosts that point inside the machine or its network, unless allowed."""
    if allow_private:
        return
    # NFKC first: "１２７.０.０.１" (full-width digits) is 127.0.0.1 to an IDNA encoder.
    name = unicodedata.normalize("NFKC", host).lower().rstrip(".")
    if name in LOCAL_HOST_NAMES or name.endswith(".localhost"):
        raise RefError(
            f"host {host!r} is this machine (set SEEDQ_ALLOW_PRIVATE_URLS for local tests)"
        )
    if looks_numeric(name) and parse_address(name) is None:
        raise RefError(f"host {host!r} is neither a name nor a valid IP address")
    if is_private_address(name):
        raise RefError(
            f"address {host} is loopback, private or link-local "
            "(set SEEDQ_ALLOW_PRIVATE_URLS for local tests)"
        )


def check_http_url(url: str, *, allow_private: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefError("only http and https URLs are allowed")
    if not parts.hostname:
        raise RefError("URL has no host")
    if parts.username or parts.password:
        raise RefError("URL must not carry a user name or password")
    try:
        _ = parts.port
    except ValueError as exc:
        raise RefError("URL has an invalid port") from exc
    check_url_host(parts.hostname, allow_private=allow_private)
    return url


S3_ALLOW_SETTING = "SEEDQ_INPUT_S3_ALLOW"
INPUT_ROOT_SETTING = "SEEDQ_INPUT_ROOT"
# S3's rules for a bucket name (lower case; dots and hyphens inside), so an allowlist
# entry can only ever name one bucket, never a host, a port or a user.
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Grant:
    """One entry of ``SEEDQ_INPUT_S3_ALLOW``: a whole bucket, or one folder of it."""

    bucket: str
    prefix: str = ""  # no leading or trailing /; "" for the whole bucket

    def covers(self, bucket: str, key: str) -> bool:
        # A folder, not a string prefix: "in" covers in/a.png, never inside/a.png.
        return bucket == self.bucket and (not self.prefix or key.startswith(self.prefix + "/"))

    def __str__(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket


def _plain_key(key: str) -> bool:
    """No empty, ``.`` or ``..`` segment: some S3-compatible servers normalise those, so
    ``in/../secret.png`` could reach outside the folder a grant names."""
    return all(part not in ("", ".", "..") for part in key.split("/"))


def parse_s3_allow(text: str) -> tuple[S3Grant, ...]:
    """The grants of a comma-separated ``bucket`` or ``bucket/prefix`` list."""
    grants = []
    for entry in text.split(","):
        cleaned = entry.strip().removeprefix("s3://").strip("/")
        if not cleaned:
            continue
        bucket, _, prefix = cleaned.partition("/")
        if not _S3_BUCKET.match(bucket):
            raise RefError(f"{entry.strip()!r}: {bucket!r} is not an S3 bucket name")
        if prefix and not _plain_key(prefix):
            raise RefError(f"{entry.strip()!r}: the prefix has an empty, . or .. segment")
        grants.append(S3Grant(bucket, prefix))
    return tuple(grants)


def check_s3_uri(uri: str, allow: tuple[S3Grant, ...] = ()) -> str:
    """An ``s3://bucket/key`` input under one of the ``allow`` grants.

    The worker presigns an s3:// input with its own credentials and hands the link to
    the provider, so a manifest could otherwise have any object those credentials
    read (another run's clips, a backup) fetched by a third party.
    """
    parts = urlsplit(uri)
    key = parts.path[1:]
    if not parts.netloc or not key.strip("/"):
        raise RefError("s3 URI must be s3://bucket/key")
    if parts.query or parts.fragment:
        raise RefError("s3 URI must not have a ? or # part")
    if not _plain_key(key):
        raise RefError("s3 key must not have an empty, . or .. segment")
    if not allow:
        raise RefError(
            f"s3:// inputs are refused: {S3_ALLOW_SETTING} is empty; set it to the buckets "
            "(bucket or bucket/prefix, comma-separated) input images may come from"
        )
    if not any(grant.covers(parts.netloc, key) for grant in allow):
        allowed = ", ".join(str(g) for g in allow)
        raise RefError(f"s3://{parts.netloc}/{key} is outside {S3_ALLOW_SETTING} ({allowed})")
    return uri


def _confined(path: Path, root: Path) -> Path:
    """``path``'s real location (every symlink resolved), refused outside ``root``."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        raise RefError("local image path cannot be resolved (a symbolic link loop?)") from None
    if not real.is_relative_to(root.resolve()):
        raise RefError(
            f"local image is outside {root} (a .. or a symbolic link leads out of it; "
            f"{INPUT_ROOT_SETTING} sets another folder)"
        )
    return real


def parse_image_ref(
    raw: str,
    *,
    base_dir: Path,
    allow_private: bool,
    root: Path | None = None,
    s3_allow: tuple[S3Grant, ...] = (),
) -> ImageRef:
    """Classify and check an ``input_image``/``tail_image_url`` value.

    Local paths are relative to the manifest's folder, must stay inside ``root`` (the
    manifest's folder when None) once every ``..`` and symlink is resolved, and must
    name a readable image file no larger than the provider's 30 MB limit. The value
    kept is that real path: the worker opens it following no symlink at all
    (``worker.input_files``), so nothing swapped in after this check is read.
    s3:// URIs must be under one of ``s3_allow`` (:func:`check_s3_uri`).
    """
    text = raw.strip()
    if has_chars_of(text, ("Cc",)):
        raise RefError("contains control characters")
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return ImageRef("url", check_http_url(text, allow_private=allow_private))
    if scheme == "s3":
        return ImageRef("s3", check_s3_uri(text, s3_allow))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise RefError(f"unsupported scheme {scheme!r}: use http(s), s3:// or a local path")
    if Path(text).is_absolute() or text.startswith(("~", "/", "\\")):
        raise RefError("local image must be a path relative to the manifest's folder")
    if Path(text).suffix.lower() not in IMAGE_SUFFIXES:
        raise RefError("local image must be .jpg, .jpeg, .png or .webp")
    # Confined before anything else is said about it: a manifest must not learn which
    # files exist outside its folder from the errors.
    real = _confined(base_dir / text, base_dir if root is None else root)
    if real.suffix.lower() not in IMAGE_SUFFIXES:
        raise RefError("local image must be .jpg, .jpeg, .png or .webp (so must its link's target)")
    try:
        size = real.stat().st_size
    except OSError:
        raise RefError(f"no such file: {text}") from None
    if not real.is_file():
        raise RefError(f"not a file: {text}")
    if size > MAX_IMAGE_BYTES:
        raise RefError(f"image is {size} bytes; the provider takes at most 30 MB")
    return ImageRef("file", str(real))


def max_output_key_bytes(output: str) -> int:
    """The longest output key whose derived keys fit S3's limit under the prefix of
    ``output`` (``s3://bucket/prefix``). A local folder counts as no prefix: its paths
    may be 4096 bytes, far beyond any key allowed here."""
    if not output.strip().lower().startswith("s3:"):
        return MAX_OUTPUT_KEY_BYTES
    prefix = urlsplit(output.strip()).path.strip("/")
    taken = len(prefix.encode("utf-8")) + 1 if prefix else 0  # and the "/" after it
    return MAX_OUTPUT_KEY_BYTES - taken


def sidecar_key(output_key: str) -> str:
    """Where the JSON sidecar of the clip at ``output_key`` is stored."""
    return output_key.removesuffix(VIDEO_SUFFIX) + ".json"


def has_chars_of(text: str, categories: tuple[str, ...]) -> bool:
    """Whether ``text`` holds a character of one of the Unicode ``categories``, each of
    which str.isprintable refuses (C*, Z* but the space): a printable text is answered
    at C speed, and only the rare other one is read character by character."""
    return not text.isprintable() and any(unicodedata.category(ch) in categories for ch in text)


def name_suffix(name: str) -> str:
    """The suffix of a file name, as ``PurePosixPath(name).suffix`` says it."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def check_output_key(key: str, *, max_bytes: int = MAX_OUTPUT_KEY_BYTES) -> str:
    """An output key that stays inside the output prefix, ends in .mp4, and that (with
    every name derived from it) fits any filesystem and S3 (``max_bytes``: the whole
    key's limit, see :func:`max_output_key_bytes`)."""
    if not key or not key.strip():
        raise RefError("output key is empty")
    # Line and paragraph separators break log lines and listings as a newline does.
    if has_chars_of(key, ("Cc", "Cf", "Zl", "Zp")):
        raise RefError("output key contains control characters")
    if "\\" in key:
        raise RefError("output key must use / as separator, not \\")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise RefError("output key must be relative (no leading / or drive)")
    # Split by hand, not by PurePosixPath: the same segments once none is empty (refused
    # below), and a fifth of the producer's time per row went to building two paths.
    parts = key.split("/")
    if any(part in ("..", ".") for part in parts):
        raise RefError("output key must not contain . or .. segments")
    if "" in parts or any(p != p.strip() for p in parts):
        raise RefError("output key has an empty or space-padded segment")
    suffix = name_suffix(parts[-1]).lower()
    if suffix and suffix != VIDEO_SUFFIX:
        raise RefError(f"output key must end in {VIDEO_SUFFIX}, not {suffix}")
    if not suffix:
        key += VIDEO_SUFFIX
    for part in key.split("/"):
        size = len(part.encode("utf-8"))
        if size > MAX_OUTPUT_SEGMENT_BYTES:
            raise RefError(
                f"output key segment {_clipped(part)!r} is {size} bytes (UTF-8); at most "
                f"{MAX_OUTPUT_SEGMENT_BYTES} fit a file name with its sidecar and "
                "temporary files"
            )
    size = len(key.encode("utf-8"))
    if size > max_bytes:
        raise RefError(
            f"output key is {size} bytes (UTF-8), longer than {max_bytes} "
            "(S3 keys are at most 1024 with the output prefix and quarantine names)"
        )
    return key


def _clipped(text: str, max_chars: int = 40) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


_FORMATTER = string.Formatter()


# Cached: a manifest's templates repeat on every row (a --set or a column default), and
# each is parsed to validate and again to render. Bounded, so 100,000 distinct prompts
# keep memory flat.
@functools.lru_cache(maxsize=256)
def template_names(template: str) -> frozenset[str]:
    """The ``{name}`` placeholders of a template; refuses anything but plain names."""
    names: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise RefError(f"bad template: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise RefError(
                f"placeholder {{{field}}} must be a plain {{name}} "
                "(no attributes, indexes, formats or conversions)"
            )
        names.add(field)
    return frozenset(names)


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders; a missing name is an error naming it."""
    missing = sorted(template_names(template) - values.keys())
    if missing:
        raise RefError("unknown placeholder " + ", ".join("{" + m + "}" for m in missing))
    return template.format_map(values)
