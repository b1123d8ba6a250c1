"""lmms-eval model `longwatch`: video tasks answered from longwatch's streaming memory, one stream per video.

    pip install -e '.[lmms]'
    python -c "import longwatch.eval.lmms_adapter as a; a.register()"     # or rely on the entry point
    lmms-eval --model longwatch --model_args model=tiny,policy=rekv,frame_size=448 --tasks videomme ...

lmms-eval is imported only when the model class is first used, so longwatch never needs it. Requests
are grouped by video: each video streams once into a MemoryStream and all of its questions are asked
after the last patch (lmms-eval video tasks are offline). Replies are cut at the task's `until` strings.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Callable

log = logging.getLogger(__name__)

MODEL_ID = "longwatch"
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".npy")
# model_args key -> config key
ARG_KEYS = {"model": "model.name", "pretrained": "model.name", "dtype": "model.dtype", "device": "model.device",
            "attn": "model.attn", "max_new_tokens": "model.max_new_tokens", "fps": "ingest.fps",
            "frame_size": "ingest.frame_size", "policy": "memory.policy", "device_budget": "memory.device_budget",
            "host_budget": "memory.host_budget", "disk_budget": "memory.disk_budget",
            "window": "memory.window_blocks", "retrieve": "memory.retrieve_blocks"}
IGNORED = ("batch_size", "max_batch_size")


def video_of(visuals: Any) -> str | None:
    """The first video path among a doc's visuals (lmms-eval doc_to_visual returns a list)."""
    for v in visuals if isinstance(visuals, (list, tuple)) else [visuals]:
        if isinstance(v, str) and v.lower().endswith(VIDEO_EXT):
            return v
    return None


def cut(text: str, until: list[str]) -> str:
    """Text up to the first stop string."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


def group_by_video(items: list[tuple[str, str | None]]) -> dict[str | None, list[int]]:
    """(context, video) per request -> {video: [request indices]} in first-seen order."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, (_, video) in enumerate(items):
        groups[video].append(i)
    return dict(groups)


def config_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """lmms-eval model_args (model=tiny,policy=rekv,...) -> dotted longwatch config overrides."""
    out = {}
    for k, v in kwargs.items():
        if k in IGNORED or v is None or k == "config":
            continue
        if k not in ARG_KEYS and "." not in k:
            raise ValueError(f"longwatch lmms model: unknown model_arg {k!r} (known: {', '.join(sorted(ARG_KEYS))})")
        out[ARG_KEYS.get(k, k)] = v
    return out


def _build_class() -> type:
    from lmms_eval.api.model import lmms

    class LongwatchLMM(lmms):
        """lmms-eval model backed by longwatch's bounded streaming memory."""

        def __init__(self, config: str | None = None, stream_factory: Callable | None = None,
                     open_patches: Callable | None = None, **kwargs: Any) -> None:
            super().__init__()
            from longwatch.eval.config import load_config

            self.cfg = load_config(config, config_overrides(kwargs))
            if stream_factory is None:
                from longwatch.backbone.model import Backbone
                from longwatch.eval.runner import memory_stream_factory

                stream_factory = memory_stream_factory(Backbone.load(self.cfg.model))
            if open_patches is None:
                from longwatch.eval.runner import open_patches_default

                open_patches = open_patches_default(self.cfg)
            self.stream_factory, self.open_patches = stream_factory, open_patches
            self.streamed: list[str] = []

        def generate_until(self, requests: list) -> list[str]:
            import torch
            from tqdm import tqdm

            items = []
            for req in requests:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
                doc = self.task_dict[task][split][doc_id]
                until = gen_kwargs.get("until") or []
                items.append((context.replace("<image>", "").strip(), video_of(doc_to_visual(doc)),
                              [until] if isinstance(until, str) else list(until)))
            replies: list[str] = [""] * len(items)
            groups = group_by_video([(c, v) for c, v, _ in items])
            with torch.inference_mode(), tqdm(total=len(items), desc="longwatch", disable=self.rank != 0) as bar:
                for video, idx in groups.items():
                    stream = self.stream_factory(self.cfg.memory, f"lmms/{video}")
                    try:
                        if video is not None:
                            self.streamed.append(video)
                            with self.open_patches(video) as patches:
                                for patch in patches:
                                    stream.ingest(patch)
                        for i in idx:
                            replies[i] = cut(stream.ask(items[i][0]).text or "", items[i][2])
                            bar.update(1)
                    finally:
                        stream.close()
            return replies

        def loglikelihood(self, requests: list) -> list:
            raise NotImplementedError("longwatch answers generation tasks only (no loglikelihood)")

        def generate_until_multi_round(self, requests: list) -> list:
            raise NotImplementedError("longwatch does not implement multi-round generation")

    return LongwatchLMM


_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    """`LongwatchLMM` is built on first access, importing lmms-eval only then."""
    global _CLASS
    if name == "LongwatchLMM":
        if _CLASS is None:
            _CLASS = _build_class()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def manifest() -> Any:
    """lmms-eval entry point payload (group `lmms_eval.models`)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.LongwatchLMM")


def register() -> None:
    """Make `--model longwatch` resolvable in this process (both lmms-eval registries)."""
    from lmms_eval.api.registry import register_model
    from lmms_eval.models import MODEL_REGISTRY_V2

    register_model(MODEL_ID)(__getattr__("LongwatchLMM"))
    MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)
    log.info("registered lmms-eval model %r", MODEL_ID)
