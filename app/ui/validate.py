"""Check what a browser hands the server (uploads, camera URLs) before any decoder or socket sees it."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from longwatch.ingest.uri import redact


class InputRejected(ValueError):
    """A user input the UI refuses; the message is shown in the page as is."""


def check_upload(path: str | None, max_upload_mb: int) -> str:
    """The uploaded file's path, or InputRejected when it is missing, empty or over the size limit.

    Gradio enforces the same limit while uploading (launch(max_file_size=...)); this second check
    covers files that reach the handler another way (the API, a preloaded sample).
    """
    if not path:
        raise InputRejected("No file was received; choose a video file to upload.")
    try:
        size = os.path.getsize(path)
    except OSError:
        raise InputRejected("The uploaded file is no longer on the server; upload it again.") from None
    if size == 0:
        raise InputRejected(f"{os.path.basename(path)} is empty.")
    if size > max_upload_mb * 1_000_000:
        raise InputRejected(f"{os.path.basename(path)} is {size / 1e6:.0f} MB; the limit is "
                            f"{max_upload_mb} MB (ui.max_upload_mb).")
    return path


def check_url(url: str | None, allowed_schemes: tuple[str, ...]) -> str:
    """The stripped URL if its scheme is allowed and it names a host; InputRejected otherwise.

    Local paths, file:// and device names are refused whatever the allow-list says: a browser user
    must not be able to make the server read its own disk or cameras.
    """
    text = (url or "").strip()
    if not text:
        raise InputRejected("Enter a camera or stream URL, e.g. rtsp://camera.local:8554/live.")
    allowed = ", ".join(f"{s}://" for s in allowed_schemes)
    m = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if not m:
        raise InputRejected(f"'{redact(text)}' is not a URL; local paths and devices are not accepted "
                            f"here (allowed: {allowed}).")
    scheme = m.group(1).lower()
    if scheme == "file" or scheme not in allowed_schemes:
        raise InputRejected(f"The scheme {scheme}:// is not allowed (allowed: {allowed}).")
    try:
        host = urlsplit(text).hostname
    except ValueError:
        host = None
    if not host:
        raise InputRejected(f"'{redact(text)}' has no host name.")
    return text
