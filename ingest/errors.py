"""The one error type ingest raises for problems a user can fix: bad paths, bad files, unreachable streams."""

from __future__ import annotations


class IngestError(RuntimeError):
    """A source cannot be opened or read. The message is one line, names the source (credentials removed)
    and says what is wrong; the CLI prints it without a traceback.

    code: a stable machine-readable kind ("not_found", "empty", "not_video", "no_video_stream",
    "unsupported_codec", "unsupported_scheme", "unreachable", "timeout", "decode", "gave_up", ...).
    """

    user_facing = True

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code
