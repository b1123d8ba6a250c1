"""longwatch: a streaming long-video assistant with bounded memory on the Qwen3-VL backbone.

The installed package maps the checkout's top-level folders to subpackages: app/ -> longwatch.app,
memory/ -> longwatch.memory, backbone/ -> longwatch.backbone, ingest/ -> longwatch.ingest,
eval/ -> longwatch.eval, configs/ -> longwatch.configs (package data).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("longwatch")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
