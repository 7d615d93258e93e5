"""Multi-frame captions from a video-capable vision-language model (``caption.model: vlm``).

BLIP-2 sees one still frame, so it cannot say what happens in a clip, nor how the camera moves. A
VLM such as Qwen2.5-VL takes ``caption.vlm_frames`` evenly spaced frames of the clip as one video,
with their times (Qwen2.5-VL places them on its temporal rotary axis; Qwen3-VL writes them into its
prompt), and answers an instruction with one caption for the whole clip.

The model is loaded with ``AutoModelForImageTextToText`` and ``AutoProcessor`` from a local directory
only (no download, no remote code), so any checkpoint whose processor takes videos works:
Qwen2-VL, Qwen2.5-VL, Qwen3-VL. Captions are cut to ``caption.max_words`` words; with
``caption.template: sections`` the model is asked for four labelled lines (subject, action, scene,
camera), which are parsed into the caption's ``sections``.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from curation.caption import ClipCaption, check_weights, clean_caption, model_identity, torch_dtype, truncate_words
from curation.config import CaptionConfig

if TYPE_CHECKING:
    from curation.frames import Frame

log = logging.getLogger(__name__)

#: The fixed sections of ``template: sections``, in the order the caption lists them.
SECTIONS = ("subject", "action", "scene", "camera")

#: The instruction of each template; ``{max_words}`` is filled in.
INSTRUCTIONS = {
    "plain": "Describe this video in at most {max_words} words: who or what is in it, what happens, where it takes "
             "place, and how the camera moves. Answer with the description only.",
    "sections": "Describe this video in at most {max_words} words, as four lines:\n"
                "Subject: who or what the video shows\nAction: what happens\nScene: where it takes place\n"
                "Camera: the shot and how the camera moves",
}

#: Frames are handed to the video processor on a millisecond time base, so that every frame keeps its exact time.
TIME_BASE = 1000


def instruction(cfg: CaptionConfig) -> str:
    """The text given with the video: ``caption.vlm_prompt``, or the template's, with ``{max_words}`` filled in."""
    return (cfg.vlm_prompt or INSTRUCTIONS[cfg.template]).replace("{max_words}", str(cfg.max_words))


def parse_sections(text: str) -> dict[str, str]:
    """The labelled sections ("Subject: ...") found in ``text``, each up to the next label.

    Labels may be upper or lower case, bold (``**Camera:**``) or on one line with the others;
    sections the model left out are absent.
    """
    label = re.compile(r"[*_#\s]*\b(" + "|".join(SECTIONS) + r")\b[*_\s]*:[*_\s]*", re.IGNORECASE)
    found = list(label.finditer(text))
    sections: dict[str, str] = {}
    ends = [match.start() for match in found[1:]] + [len(text)]
    for match, end in zip(found, ends[:len(found)], strict=True):
        body = " ".join(text[match.end():end].split()).strip(" *_-;,")
        if body and match.group(1).lower() not in sections:
            sections[match.group(1).lower()] = body
    return sections


def format_sections(sections: dict[str, str]) -> str:
    """One line: "Subject: a dog. Action: runs. ..." in the fixed order."""
    return " ".join(f"{name.capitalize()}: {body.rstrip('.')}." for name, body in
                    ((name, sections[name]) for name in SECTIONS if name in sections))


def video_metadata(clip: list[Frame]) -> Any:
    """The frames' times as transformers' ``VideoMetadata``: the model learns when each frame was taken.

    Frame times count from the clip's start; sampled evenly, each sits at the centre of its share of
    the clip, so the clip (as far as the sample shows it) lasts one share past the last frame.
    """
    from transformers.video_utils import VideoMetadata

    times = [frame.time for frame in clip]
    share = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 2 * times[0]
    indices = [round(t * TIME_BASE) for t in times]
    total = max(round((times[-1] + share / 2) * TIME_BASE), indices[-1] + 1)
    return VideoMetadata(total_num_frames=total, fps=float(TIME_BASE), frames_indices=indices,
                         duration=total / TIME_BASE, width=clip[0].image.width, height=clip[0].image.height)


class VlmCaptioner:
    """A video-capable VLM and its processor captioning lists of clips together (``VlmCaptioner.load``)."""

    #: The dtype "auto" means on a GPU: Qwen-VL models are released in bfloat16.
    GPU_DTYPE = "bfloat16"

    def __init__(self, cfg: CaptionConfig, model: Any, processor: Any, name: str, revision: str) -> None:
        self.cfg = cfg
        self.model, self.processor = model.eval(), processor
        self.name, self.revision = name, revision
        self.device, self.dtype = model.device, model.dtype
        self.frames_per_clip = cfg.vlm_frames
        if getattr(processor, "video_processor", None) is None or processor.chat_template is None:
            raise ValueError(f"{name} ({cfg.model_path}) is not a video-capable chat VLM: its processor has "
                             f"{'no video processor' if processor.chat_template else 'no chat template'}; "
                             "caption.model: vlm needs one such as Qwen2.5-VL")
        # Decoder-only models continue the prompt: padding goes on the left so every row ends where it generates.
        processor.tokenizer.padding_side = "left"
        self.prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": instruction(cfg)}]}],
            tokenize=False, add_generation_prompt=True)
        # Room for max_words words (about 1.3 tokens each in English) and, with sections, their labels.
        tokens = 2 * cfg.max_words + 16 + (32 if cfg.template == "sections" else 0)
        self.generation_config = copy.deepcopy(model.generation_config)
        self.generation_config.update(max_new_tokens=tokens, num_beams=cfg.num_beams, do_sample=False)

    @classmethod
    def load(cls, cfg: CaptionConfig) -> VlmCaptioner:
        """Load ``cfg.model_path`` (local files only, no remote code) on this process's GPU if it has one, else CPU."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        directory = check_weights(cfg.model_path, "vlm")
        name, revision = model_identity(directory)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch_dtype(cfg.dtype, device.type == "cuda", cls.GPU_DTYPE)
        started = time.monotonic()
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        model = AutoModelForImageTextToText.from_pretrained(directory, local_files_only=True, dtype=dtype,
                                                            trust_remote_code=False, use_safetensors=True)
        captioner = cls(cfg, model.to(device), processor, name, revision)
        log.info("caption VLM %s (revision %s) loaded on %s as %s in %.1f s", name, revision, device,
                 str(dtype).removeprefix("torch."), time.monotonic() - started)
        return captioner

    def inputs(self, clips: list[list[Frame]]) -> Any:
        """The model's inputs for a batch of clips: the prompt, each clip's frames resized by the processor, times.

        Each clip goes in as one (frames, height, width, 3) array: the processor converts PIL images
        to arrays several times over (a third of its time on a CPU), an array once, to the same pixels.
        """
        import numpy as np

        inputs = self.processor(text=[self.prompt] * len(clips),
                                videos=[np.stack([np.asarray(f.image) for f in clip]) for clip in clips],
                                video_metadata=[video_metadata(clip) for clip in clips], do_sample_frames=False,
                                padding=True, return_tensors="pt").to(self.device)
        for key in ("pixel_values_videos", "pixel_values"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return inputs

    def generate(self, clips: list[list[Frame]]) -> tuple[list[str], int]:
        """The raw text the model generates for each clip (prompt not included), in one batch; and the number of
        tokens it generated (padding after an early end not counted)."""
        import torch

        inputs = self.inputs(clips)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, generation_config=self.generation_config)
        new_tokens = generated[:, inputs["input_ids"].shape[1]:]
        pad = self.generation_config.pad_token_id
        counted = int((new_tokens != pad).sum()) if pad is not None else new_tokens.numel()
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True), counted

    def caption_clips(self, clips: list[list[Frame]]) -> list[ClipCaption]:
        """One caption per clip from all its frames, cleaned and cut to ``caption.max_words`` words."""
        texts, _ = self.generate(clips)
        return [self._caption(clip, text) for clip, text in zip(clips, texts, strict=True)]

    def _caption(self, clip: list[Frame], raw: str) -> ClipCaption:
        entry: dict[str, Any] = {"times": [frame.time for frame in clip]}
        if self.cfg.template == "sections":
            entry["sections"] = parse_sections(raw)
            # A caption with none of its sections (the model ignored the template) is kept as the model wrote it.
            text = format_sections(entry["sections"]) if entry["sections"] else raw
        else:
            text = raw
        entry["text"] = truncate_words(clean_caption(text), self.cfg.max_words)
        seen = f"{len(clip)} frames from {clip[0].time:.3f} s to {clip[-1].time:.3f} s"
        return ClipCaption(entry["text"], [entry], seen)
