"""Tell what a source string is (file, webcam, network URL) and remove credentials before it is shown."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from longwatch.ingest.errors import IngestError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps")
# Query keys whose values are secrets (signed URLs, camera tokens).
_SECRET_KEYS = re.compile(r"(pass|pwd|token|secret|key|auth|sig|signature|credential)", re.I)
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]*@")


@dataclass(frozen=True)
class SourceSpec:
    """kind: "file" | "webcam" | "network"; target: path, device index or URL (raw, may hold credentials)."""

    kind: str
    target: str | int
    scheme: str = ""

    @property
    def display(self) -> str:
        """The source as it may appear in logs, errors and state: credentials removed."""
        return redact(str(self.target))


def redact(uri: str) -> str:
    """`rtsp://user:pw@cam/x?token=abc` -> `rtsp://***@cam/x?token=***`; other strings unchanged."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return _USERINFO.sub(r"\1***@", uri)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, uri: str | None = None) -> str:
    """Remove credentials from any message (decoder errors quote the URL they were given)."""
    if uri and uri in text:
        text = text.replace(uri, redact(uri))
    return _USERINFO.sub(r"\1***@", text)


def parse_source(source: str | int) -> SourceSpec:
    """Classify SOURCE: a device index (0) or /dev/videoN is a webcam, scheme://... is a network
    stream, file://path or anything else is a local file. Raises IngestError for unknown schemes
    and missing files."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return SourceSpec("webcam", int(source))
    text = str(source).strip()
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceSpec("webcam", text)
    m = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            text = urlsplit(text).path
        elif scheme in NETWORK_SCHEMES:
            if not urlsplit(text).hostname:
                raise IngestError(f"{redact(text)}: URL has no host", code="bad_url")
            return SourceSpec("network", text, scheme)
        else:
            raise IngestError(
                f"{redact(text)}: unsupported URL scheme '{scheme}' (supported: {', '.join(NETWORK_SCHEMES)}, "
                "a file path or a webcam index)", code="unsupported_scheme")
    path = Path(text).expanduser()
    if not path.exists():
        raise IngestError(f"{text}: no such file", code="not_found")
    if not path.is_file():
        raise IngestError(f"{text}: not a regular file", code="not_found")
    return SourceSpec("file", str(path))
