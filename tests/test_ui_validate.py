"""What the browser may hand the server: allowed camera URLs only, uploads within the size limit."""

from __future__ import annotations

import pytest

from longwatch.app.config import UIConfig
from longwatch.app.ui.validate import InputRejected, check_upload, check_url

SCHEMES = UIConfig().allowed_schemes


@pytest.mark.parametrize("url", ["rtsp://cam.local:8554/live", " rtsps://user:pw@10.0.0.2/stream ",
                                 "rtmp://127.0.0.1/live/x", "https://example.com/v.m3u8", "HTTP://host/clip.mp4"])
def test_allowed_schemes_pass(url):
    assert check_url(url, SCHEMES) == url.strip()


@pytest.mark.parametrize("url, needle", [
    ("file:///etc/passwd", "file:// is not allowed"),
    ("/etc/passwd", "local paths"),
    ("~/videos/secret.mp4", "local paths"),
    ("0", "local paths"),
    ("/dev/video0", "local paths"),
    ("ftp://host/x", "ftp:// is not allowed"),
    ("rtsp:///no-host", "no host"),
    ("", "Enter a camera"),
])
def test_local_files_devices_and_other_schemes_are_refused(url, needle):
    with pytest.raises(InputRejected, match=needle):
        check_url(url, SCHEMES)


def test_a_narrower_allow_list_is_honoured():
    with pytest.raises(InputRejected, match="http:// is not allowed"):
        check_url("http://host/x", ("rtsp",))


def test_credentials_never_echo_back_in_the_message():
    with pytest.raises(InputRejected) as e:
        check_url("rtsp://admin:hunter2@", SCHEMES)
    assert "hunter2" not in str(e.value)


def test_upload_size_limit_and_empty_or_missing_files(tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 2_100_000)
    with pytest.raises(InputRejected, match=r"big.mp4 is 2 MB; the limit is 1 MB"):
        check_upload(str(big), max_upload_mb=1)
    assert check_upload(str(big), max_upload_mb=3) == str(big)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputRejected, match="empty"):
        check_upload(str(empty), 10)
    with pytest.raises(InputRejected, match="no longer on the server"):
        check_upload(str(tmp_path / "gone.mp4"), 10)
    with pytest.raises(InputRejected, match="No file"):
        check_upload(None, 10)
