"""A tiny, untrained Qwen2.5-VL (or Qwen3-VL) saved like a real checkpoint, for tests, the demo and CPU benchmarks.

It is ``Qwen2_5_VLForConditionalGeneration`` (vision transformer with windowed attention, patch
merger, Qwen2 decoder with multimodal rotary positions) at toy sizes, with a ``Qwen2_5_VLProcessor``
made offline: a byte-level BPE tokenizer with no merges (one token per byte) and Qwen's special
tokens, Qwen2-VL image and video processors at the vision tower's patch sizes, and a chat template
that renders messages as Qwen2.5-VL's does. ``version="3"`` makes ``Qwen3VLForConditionalGeneration``
(DeepStack vision features, interleaved rotary sections; its processor writes each frame's time into
the prompt) the same way. It is written with ``save_pretrained`` so that
``curation.captioners.vlm`` loads it through exactly the code that loads real weights. Its weights
are random: its captions are meaningless, and its config names it so, so every clip captioned
with it says so in its metadata.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from demo.tiny_blip2 import byte_symbols, tiny_model_cli

#: What clips captioned by this model record as ``caption_model``.
TINY_MODEL_NAME = "videofactory-tiny-qwen2.5-vl-untrained (random weights: captions are meaningless)"
TINY_QWEN3_NAME = "videofactory-tiny-qwen3-vl-untrained (random weights: captions are meaningless)"

#: Qwen2.5-VL's special tokens, in its order; the 256 byte-level symbols come first, these after them.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")

#: Vision patches: 8x8 pixels, two frames deep, merged 2x2 into one token for the decoder.
PATCH_SIZE, TEMPORAL_PATCH_SIZE, MERGE_SIZE = 8, 2, 2

#: Frames are resized to at most this many pixels (a 64x32 frame becomes 4x2 merged tokens per frame pair).
MAX_PIXELS = 64 * 32

#: Standard deviation of the random weights: wide, so that different clips lead to different text.
INIT_STD = 0.5

#: Added to the space's logit when generating (see ``build_tiny_qwen_vl``).
SPACE_BIAS = 4.0

#: Qwen2.5-VL's chat template, cut to what captioning uses (text, image and video parts; no tools).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer with Qwen's special tokens and no merges (one token per byte)."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in vocab]})
    return tokenizer


def tiny_processor(version: str = "2.5"):
    """The version's processor: ``tiny_tokenizer``, its image and video processors at the tiny patch sizes."""
    import transformers

    video_class = "Qwen3VLVideoProcessor" if version == "3" else "Qwen2VLVideoProcessor"
    processor_class = "Qwen3VLProcessor" if version == "3" else "Qwen2_5_VLProcessor"
    sizes = {"patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": MERGE_SIZE}
    # cap_pixels_per_frame: as qwen-vl-utils sizes frames (and what transformers will do by default).
    size = {"shortest_edge": (PATCH_SIZE * MERGE_SIZE) ** 2, "longest_edge": MAX_PIXELS}
    video_processor = getattr(transformers, video_class)(size=size, cap_pixels_per_frame=True, **sizes)
    return getattr(transformers, processor_class)(
        image_processor=transformers.Qwen2VLImageProcessor(size=size, **sizes), video_processor=video_processor,
        tokenizer=tiny_tokenizer(), chat_template=CHAT_TEMPLATE)


def tiny_qwen_vl_config(tokenizer, version: str = "2.5"):
    """A Qwen2.5-VL (or Qwen3-VL) config a few hundred kilobytes large, its special token ids ``tokenizer``'s."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    ids = tokenizer.convert_tokens_to_ids
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
              "patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE,
              "spatial_merge_size": MERGE_SIZE, "initializer_range": INIT_STD}
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096,
            "initializer_range": INIT_STD, "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
    if version == "3":
        config_class, name = Qwen3VLConfig, TINY_QWEN3_NAME
        vision.update(num_position_embeddings=64, deepstack_visual_indexes=[1])
        text.update(head_dim=16)
        text["rope_parameters"]["mrope_interleaved"] = True
    else:
        config_class, name = Qwen2_5_VLConfig, TINY_MODEL_NAME
        vision.update(window_size=2 * PATCH_SIZE * MERGE_SIZE, fullatt_block_indexes=[1])
    return config_class(vision_config=vision, text_config=text, image_token_id=ids("<|image_pad|>"),
                        video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                        vision_end_token_id=ids("<|vision_end|>"), videofactory_model_name=name)


def build_tiny_qwen_vl(directory: str | Path, seed: int = 0, silent: bool = False, version: str = "2.5") -> Path:
    """Write the tiny model to ``directory`` (config, safetensors weights, processor) and return it.

    Its generation config lets it write lower-case letters, spaces, commas and full stops only (random
    bytes would mostly decode to nothing), so its meaningless captions come as visibly meaningless
    words, and a word limit has words to cut. ``silent=True`` makes a model that can only end its
    text at once.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    directory = Path(directory)
    processor = tiny_processor(version)
    config = tiny_qwen_vl_config(processor.tokenizer, version)
    torch.manual_seed(seed)
    model_class = Qwen3VLForConditionalGeneration if version == "3" else Qwen2_5_VLForConditionalGeneration
    model = model_class(config).eval()
    allowed = {config.text_config.eos_token_id}
    if not silent:
        wordy = [ord(c) for c in " .,abcdefghijklmnopqrstuvwxyz"]
        allowed.update(processor.tokenizer.convert_tokens_to_ids(byte_symbols(wordy)))
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.suppress_tokens = [i for i in range(config.text_config.vocab_size) if i not in allowed]
    if not silent:  # a random model rarely picks the one space among 29 symbols: favoured, its text has words
        space = processor.tokenizer.convert_tokens_to_ids(byte_symbols([ord(" ")]))[0]
        model.generation_config.sequence_bias = [[[space], SPACE_BIAS]]
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    return tiny_model_cli(argv, "demo.tiny_qwen_vl", __doc__, build_tiny_qwen_vl, TINY_MODEL_NAME)

if __name__ == "__main__":
    sys.exit(main())
