"""Captioners: BLIP-2 on single frames (here) or a VLM on several (``curation.caption_vlm``), and caption clean-up.

HD-VG-130M captions each clip with BLIP-2 from its middle frame. ``Captioner`` loads
``Blip2ForConditionalGeneration`` and its processor with ``from_pretrained`` from a local
directory only (``local_files_only``: a job never downloads weights, and missing weights stop it
at the start with the command that fetches them), in half precision on a GPU and float32 on a
CPU, and captions a list of images in one ``generate`` call.

Both captioners answer the stage through one method, ``caption_clips`` (the frames of each clip in,
one ``ClipCaption`` per clip out); ``load_captioner`` picks the one ``caption.model`` names.

Every caption names the model it came from (``caption_model``, ``caption_revision``), so a corpus
can always tell BLIP-2 captions from those of another checkpoint, or of the untrained test model
(``demo.tiny_blip2``), whose captions are meaningless.

torch and transformers are imported inside the functions that need them: every Ray worker
imports this module (for ``uncaptioned``), and only caption actors should pay for them.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.config import CaptionConfig
from curation.frames import middle_index

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from curation.caption_vlm import VlmCaptioner
    from curation.frames import Frame

log = logging.getLogger(__name__)

#: ``caption_model`` of clips made with captioning off.
NO_MODEL = "none"

#: The weights the documented default ``caption.model_path`` expects, and how to get them.
DEFAULT_REPO = "Salesforce/blip2-opt-2.7b"

#: The VLM the documentation suggests for ``caption.model: vlm``.
DEFAULT_VLM_REPO = "Qwen/Qwen2.5-VL-7B-Instruct"

#: ``config.json`` key naming a model this project built itself (the tiny untrained test model).
MODEL_NAME_KEY = "videofactory_model_name"

#: Where ``hf download --local-dir`` records the commit each file came from.
DOWNLOAD_METADATA = Path(".cache") / "huggingface" / "download" / "config.json.metadata"


def uncaptioned() -> dict[str, Any]:
    """Caption columns of a clip when captioning is off: empty, and saying so."""
    return {"caption": "", "captions": "[]", "caption_model": NO_MODEL, "caption_revision": ""}


@dataclass(frozen=True)
class ClipCaption:
    """What a captioner made of one clip's frames."""

    text: str  # the clip's caption ("" when the model said nothing usable: the stage rejects the clip)
    entries: list[dict[str, Any]]  # the ``captions`` column's JSON list
    seen: str  # what the caption was made from, for messages: "the frame at 1.250 s"


def check_weights(model_path: str | Path, model: str = "blip2") -> Path:
    """The absolute model directory, or a FileNotFoundError saying how to get the weights.

    A VLM asked for with BLIP-2's directory (the default ``model_path``) is refused here, at the
    job's start, rather than by every actor when it loads.
    """
    directory = Path(model_path).expanduser().resolve()
    repo, kind = (DEFAULT_VLM_REPO, "VLM") if model == "vlm" else (DEFAULT_REPO, "BLIP-2")
    if (directory / "config.json").is_file() and directory.is_dir() and weights_bytes(directory):
        model_type = json.loads((directory / "config.json").read_text()).get("model_type", "")
        if model == "vlm" and model_type.startswith("blip"):
            raise ValueError(f"caption.model is vlm but caption.model_path ({model_path}) holds a {model_type} "
                             f"checkpoint; point it at a video-capable VLM, e.g.\n    hf download {repo} "
                             f"--local-dir models/{repo.split('/')[1].lower()}")
        return directory
    suggested = model_path if model == "blip2" else f"models/{repo.split('/')[1].lower()}"
    raise FileNotFoundError(
        f"no {kind} weights in {directory} (caption.model_path: {model_path}). Download them once where there "
        f"is internet:\n    hf download {repo} --local-dir {suggested}\n"
        "and give caption.model_path as an absolute path every Ray node can read (a job submitted with "
        "`ray job submit` runs from an uploaded copy of the project that does not carry models/). "
        "Or set caption.enabled: false to build the corpus without captions."
    )


def weights_bytes(directory: Path) -> int:
    """Bytes of the checkpoint's weight files: about what the model takes in memory once loaded."""
    return sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin") for p in directory.glob(pattern))


def model_identity(directory: Path) -> tuple[str, str]:
    """(name, revision) of the checkpoint in ``directory``, for every clip's metadata.

    The name is the one a model built by this project records in its config (the untrained test
    model says so in it), else a Hub id left in the config, else the directory's name. The
    revision is the commit ``hf download --local-dir`` recorded, else "unknown".
    """
    config = json.loads((directory / "config.json").read_text())
    hub_id = config.get("_name_or_path") or ""
    name = config.get(MODEL_NAME_KEY) or (hub_id if hub_id and not Path(hub_id).is_absolute() else directory.name)
    metadata = directory / DOWNLOAD_METADATA
    revision = "unknown"
    if metadata.is_file():
        first = metadata.read_text().splitlines()[:1]
        if first and re.fullmatch(r"[0-9a-f]{40}", first[0].strip()):
            revision = first[0].strip()
    return name, revision


def torch_dtype(name: str, on_gpu: bool, gpu_auto: str = "float16") -> torch.dtype:
    """The weight dtype for ``caption.dtype``: "auto" is ``gpu_auto`` on a GPU and float32 on a CPU.

    BLIP-2 was released in float16; Qwen-VL models in bfloat16 (their activations overflow float16).
    """
    import torch

    if name == "auto":
        return getattr(torch, gpu_auto) if on_gpu else torch.float32
    return getattr(torch, name)


def clean_caption(text: str, prompt: str = "") -> str:
    """A generated caption made presentable: no prompt echo, single spaces, no repeated phrase.

    Greedy decoding of small captioners loops ("a man riding a horse a man riding a horse"):
    a phrase repeated back to back is kept once. An output of nothing but whitespace or the
    prompt cleans to "" (which the stage rejects as ``empty_caption``).
    """
    text = " ".join(text.split())
    prompt = " ".join(prompt.split())
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt):].strip()
    return _collapse_repeats(text.split())


def _collapse_repeats(words: list[str]) -> str:
    """Drop every phrase (1 word or more) that immediately repeats the phrase before it."""
    changed = True
    while changed:
        changed = False
        for size in range(len(words) // 2, 0, -1):
            i = 0
            while i + 2 * size <= len(words):
                if [w.lower() for w in words[i:i + size]] == [w.lower() for w in words[i + size:i + 2 * size]]:
                    del words[i + size:i + 2 * size]
                    changed = True
                else:
                    i += 1
    return " ".join(words)


def truncate_words(text: str, max_words: int) -> str:
    """``text`` cut to at most ``max_words`` words: at the last sentence end among them when that keeps
    at least half of them (a whole sentence reads better than a cut one), else after the last word."""
    words = text.split()
    if len(words) <= max_words:
        return text
    kept = words[:max_words]
    ends = [i for i, word in enumerate(kept) if word.endswith((".", "!", "?"))]
    if ends and ends[-1] + 1 >= max_words / 2:
        kept = kept[:ends[-1] + 1]
    return " ".join(kept)


def load_captioner(cfg: CaptionConfig) -> Captioner | VlmCaptioner:
    """The captioner ``cfg.model`` names, loaded from ``cfg.model_path``."""
    if cfg.model == "vlm":
        from curation.caption_vlm import VlmCaptioner

        return VlmCaptioner.load(cfg)
    return Captioner.load(cfg)


class Captioner:
    """A BLIP-2 model and processor captioning lists of images together (``Captioner.load`` reads a checkpoint)."""

    #: The dtype "auto" means on a GPU.
    GPU_DTYPE = "float16"

    def __init__(self, cfg: CaptionConfig, model: Any, processor: Any, name: str, revision: str) -> None:
        self.cfg = cfg
        self.model, self.processor = model.eval(), processor
        self.name, self.revision = name, revision
        self.device, self.dtype = model.device, model.dtype
        if processor.num_query_tokens is None or model.config.image_token_index is None:
            raise ValueError(
                f"{name} is a BLIP-2 checkpoint from before image tokens were added to its processor (no "
                f"num_query_tokens / image_token_index); download it again with `hf download {DEFAULT_REPO} "
                f"--local-dir {cfg.model_path}`"
            )
        # The checkpoint's own generation settings (its end-of-text token, ...) with the job's decoding.
        self.generation_config = copy.deepcopy(model.generation_config)
        self.generation_config.update(max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, do_sample=False)
        self.frames_per_clip = cfg.frames

    @classmethod
    def load(cls, cfg: CaptionConfig) -> Captioner:
        """Load ``cfg.model_path`` (local files only) on the GPU if this process has one, else the CPU."""
        import torch
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        directory = check_weights(cfg.model_path)
        name, revision = model_identity(directory)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch_dtype(cfg.dtype, device.type == "cuda", cls.GPU_DTYPE)
        started = time.monotonic()
        processor = Blip2Processor.from_pretrained(directory, local_files_only=True)
        model = Blip2ForConditionalGeneration.from_pretrained(directory, local_files_only=True, dtype=dtype)
        captioner = cls(cfg, model.to(device), processor, name, revision)
        log.info("caption model %s (revision %s) loaded on %s as %s in %.1f s", name, revision, device,
                 str(dtype).removeprefix("torch."), time.monotonic() - started)
        return captioner

    def generate(self, images: list[Image.Image]) -> list[str]:
        """The raw text BLIP-2 generates for each image (the prompt not included), in one batch."""
        import torch

        inputs = self.processor(images=images, text=[self.cfg.prompt] * len(images), return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, generation_config=self.generation_config)
        new_tokens = generated[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)

    def caption(self, images: list[Image.Image]) -> list[str]:
        """Cleaned captions of ``images`` ("" where the model said nothing usable)."""
        return [clean_caption(text, self.cfg.prompt) for text in self.generate(images)]

    def caption_clips(self, clips: list[list[Frame]]) -> list[ClipCaption]:
        """Every frame of every clip captioned in one batch; a clip's caption is its middle frame's."""
        texts = iter(self.caption([frame.image for clip in clips for frame in clip]))
        out = []
        for clip in clips:
            listed = [{"time": frame.time, "text": next(texts)} for frame in clip]
            main = middle_index(len(clip))
            out.append(ClipCaption(listed[main]["text"], listed, f"the frame at {clip[main].time:.3f} s"))
        return out
