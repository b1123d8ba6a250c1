"""lmms-eval model `longwatch`: video tasks answered from longwatch's streaming memory, one stream per video.

    pip install -e . && pip install --no-deps -r .ci/lmms-eval.txt      # README "lmms-eval"
    lmms-eval --model longwatch --model_args pretrained=needle-tiny,policy=rekv,max_num_frames=64 --tasks videomme

The entry point in pyproject.toml makes `--model longwatch` resolve (or call register()); lmms-eval is imported
only when the model class is first used. model_args take lmms-eval's own `qwen3_vl` names where they overlap
(pretrained, fps, max_pixels, min_pixels, total_pixels, max_num_frames, system_prompt, attn_implementation) plus
longwatch's (policy, window, retrieve, budgets, frame_size; any dotted config key). Requests are grouped by
video: each video streams once into a MemoryStream and its questions are asked after the last patch (lmms-eval
video tasks are offline). Each request decodes with its task's gen_kwargs (max_new_tokens, temperature, top_p,
top_k; greedy unless temperature > 0, as qwen3_vl) and its reply is cut at the `until` strings. Under
`accelerate launch` or `torchrun` the evaluator hands each rank its own share of the documents
(build_all_requests(rank, world_size)); the model reports the rank and world size accelerate sees.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import Any, Callable

from longwatch.backbone.config import Sampling

log = logging.getLogger(__name__)

MODEL_ID = "longwatch"
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpeg", ".mpg", ".npy")
# model_args key -> config key; the pixel knobs are the ingest config's qwen-vl-utils sizing (README "Frame size")
ARG_KEYS = {"model": "model.name", "pretrained": "model.name", "dtype": "model.dtype", "device": "model.device",
            "attn": "model.attn", "attn_implementation": "model.attn", "max_new_tokens": "model.max_new_tokens",
            "fps": "ingest.fps", "frame_size": "ingest.frame_size", "min_pixels": "ingest.min_pixels",
            "max_pixels": "ingest.max_pixels", "total_pixels": "ingest.total_pixels", "policy": "memory.policy",
            "device_budget": "memory.device_budget", "host_budget": "memory.host_budget",
            "disk_budget": "memory.disk_budget", "window": "memory.window_blocks", "retrieve": "memory.retrieve_blocks"}
OWN_ARGS = ("config", "max_num_frames", "system_prompt")
"""Taken by the model itself, not config keys."""
IGNORED = ("batch_size", "max_batch_size", "device_map", "use_cache")
"""qwen3_vl arguments with no meaning here: one stream answers at a time, the cache is the memory itself."""


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
    """lmms-eval model_args (pretrained=needle-tiny,policy=rekv,...) -> dotted longwatch config overrides."""
    out = {}
    for k, v in kwargs.items():
        if k in OWN_ARGS or v is None:
            continue
        if k in IGNORED:
            log.info("lmms model_arg %s=%s has no effect on longwatch", k, v)
            continue
        if k not in ARG_KEYS and "." not in k:
            known = sorted([*ARG_KEYS, *OWN_ARGS])
            raise ValueError(f"longwatch lmms model: unknown model_arg {k!r} (known: {', '.join(known)})")
        out[ARG_KEYS.get(k, k)] = v
    return out


def sampling_for(gen_kwargs: dict[str, Any], default: Sampling) -> Sampling:
    """A task's generation kwargs as longwatch Sampling, read as lmms-eval's qwen3_vl reads them: greedy unless
    temperature > 0 (and do_sample is not False); max_new_tokens from the task, else the model's."""
    if int(gen_kwargs.get("num_beams") or 1) > 1:
        raise ValueError("longwatch lmms model: beam search (num_beams > 1) is not supported")
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    if gen_kwargs.get("do_sample") is False or temperature <= 0:
        return dataclasses.replace(default.greedy(), max_new_tokens=int(gen_kwargs.get("max_new_tokens")
                                                                         or default.max_new_tokens))
    return dataclasses.replace(default, temperature=temperature, top_p=float(gen_kwargs.get("top_p") or 1.0),
                               top_k=int(gen_kwargs.get("top_k") or 0),
                               max_new_tokens=int(gen_kwargs.get("max_new_tokens") or default.max_new_tokens))


def capped_fps(fps: float, duration_s: float | None, max_frames: int | None) -> float:
    """Sampling rate that takes at most `max_frames` frames from a video of `duration_s`: qwen3_vl's
    `fps` + `max_num_frames`, where a long video is sampled more sparsely rather than cut short."""
    if not max_frames or not duration_s:
        return fps
    return min(fps, max_frames / duration_s)


def _build_class() -> type:
    from lmms_eval.api.model import lmms
    from loguru import logger as eval_logger  # lmms-eval's own log, shown at its --verbosity

    class LongwatchLMM(lmms):
        """lmms-eval model backed by longwatch's bounded streaming memory."""

        def __init__(self, config: str | None = None, max_num_frames: int | None = None,
                     system_prompt: str | None = None, stream_factory: Callable | None = None,
                     open_patches: Callable | None = None, **kwargs: Any) -> None:
            super().__init__()
            from accelerate import Accelerator

            from longwatch.eval.config import load_config

            self.accelerator = Accelerator()  # the evaluator gathers counts and samples across ranks through it
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
            self.config_path, self.overrides = config, config_overrides(kwargs)
            if self._world_size > 1 and self.accelerator.device.type == "cuda":
                self.overrides["model.device"] = str(self.accelerator.device)  # one GPU per rank
            self.cfg = load_config(config, self.overrides)
            self.max_num_frames = int(max_num_frames) if max_num_frames else None
            self.sampling = Sampling(max_new_tokens=self.cfg.model.max_new_tokens, seed=self.cfg.model.seed)
            if stream_factory is None:
                from longwatch.backbone.model import Backbone
                from longwatch.eval.runner import memory_stream_factory

                prompt = self._resolve_system_prompt(system_prompt) if system_prompt else None
                stream_factory = memory_stream_factory(Backbone.load(self.cfg.model, prompt))
            self.stream_factory, self.open_patches = stream_factory, open_patches or self._open_video
            self.streamed: list[str] = []

        @property
        def device(self) -> Any:
            return self.accelerator.device

        def _open_video(self, path: str) -> Any:
            """The video's patches at the config's fps, lowered so at most max_num_frames frames are sampled."""
            from longwatch.eval.config import load_config
            from longwatch.eval.runner import open_patches_default

            cfg = self.cfg
            if self.max_num_frames and not path.endswith(".npy"):
                from longwatch.ingest.sources import probe

                fps = capped_fps(cfg.ingest.fps, probe(path).duration_s, self.max_num_frames)
                if fps < cfg.ingest.fps:
                    cfg = load_config(self.config_path, {**self.overrides, "ingest.fps": fps})
            return open_patches_default(cfg)(path)

        def generate_until(self, requests: list) -> list[str]:
            import torch
            from tqdm import tqdm

            items = []
            for req in requests:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
                doc = self.task_dict[task][split][doc_id]
                until = gen_kwargs.get("until") or []
                items.append((context.replace("<image>", "").strip(), video_of(doc_to_visual(doc)),
                              [until] if isinstance(until, str) else list(until), sampling_for(gen_kwargs,
                                                                                               self.sampling)))
            eval_logger.info(f"longwatch rank {self.rank}/{self.world_size}: {len(items)} request(s)")
            replies: list[str] = [""] * len(items)
            groups = group_by_video([item[:2] for item in items])
            with torch.inference_mode(), tqdm(total=len(items), desc="longwatch", disable=self.rank != 0) as bar:
                for n, (video, idx) in enumerate(groups.items(), 1):
                    bar.set_description(f"longwatch video {n}/{len(groups)}")
                    stream = self.stream_factory(self.cfg.memory, f"lmms/{video}")
                    try:
                        if video is not None:
                            self.streamed.append(video)
                            with self.open_patches(video) as patches:
                                for patch in patches:
                                    stream.ingest(patch)
                        for i in idx:
                            text, _, until, sampling = items[i]
                            replies[i] = cut(stream.ask(text, sampling=sampling).text or "", until)
                            self.cache_hook.add_partial("generate_until", (text, requests[i].args[1]), replies[i])
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
