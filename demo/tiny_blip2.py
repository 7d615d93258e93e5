"""A tiny, untrained BLIP-2 saved like a real checkpoint, for tests, the demo and CPU benchmarks.

It has BLIP-2 OPT's architecture at toy sizes (vision transformer, Q-Former, OPT decoder), a
byte-level BPE tokenizer made offline in OPT's layout (``</s>`` begins and ends sequences, ``<pad>``
pads, ``<image>`` marks the query tokens) and a ``BlipImageProcessor`` at the vision tower's size. It
is written with ``save_pretrained`` so that ``curation.caption`` loads it through exactly the code
that loads the real weights. Its weights are random: its captions are meaningless, and its config
names it so, so every clip captioned with it says so in its metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

#: What clips captioned by this model record as ``caption_model``.
TINY_MODEL_NAME = "videofactory-tiny-blip2-untrained (random weights: captions are meaningless)"

#: OPT's special tokens and their ids; the 256 byte-level symbols follow, then ``<image>``.
SPECIAL_TOKENS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}

IMAGE_SIZE = 32
NUM_QUERY_TOKENS = 4

#: Standard deviation of the random weights (see ``tiny_blip2_config``).
INIT_STD = 0.5


def tiny_blip2_config(vocab_size: int, image_token_index: int):
    """A BLIP-2 OPT config a few hundred kilobytes large.

    Weights are drawn wide (std 0.5, not the usual 0.02) so that different images lead to different
    text: at the usual scale a random model writes the same thing, or nothing, for every image,
    and tests could not see a frame reach the model.
    """
    from transformers import Blip2Config

    return Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8, "initializer_range": INIT_STD},
        qformer_config={"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 64, "max_position_embeddings": 64, "initializer_range": INIT_STD},
        text_config={"model_type": "opt", "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2,
                     "ffn_dim": 64, "num_attention_heads": 2, "word_embed_proj_dim": 32,
                     "max_position_embeddings": 128, "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1,
                     "init_std": INIT_STD},
        num_query_tokens=NUM_QUERY_TOKENS,
        initializer_range=INIT_STD,
        image_token_index=image_token_index,
        videofactory_model_name=TINY_MODEL_NAME,
    )


def tiny_tokenizer():
    """A byte-level BPE tokenizer in OPT's layout, with no merges (one token per byte)."""
    from tokenizers import pre_tokenizers
    from transformers import GPT2Tokenizer

    vocab = dict(SPECIAL_TOKENS)
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    return GPT2Tokenizer(vocab=vocab, merges=[], bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                         pad_token="<pad>", add_bos_token=True)


def tiny_processor(image_size: int, num_query_tokens: int):
    """A ``Blip2Processor``: ``tiny_tokenizer`` and a ``BlipImageProcessor`` resizing to ``image_size``."""
    from transformers import Blip2Processor, BlipImageProcessor

    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return Blip2Processor(image_processor=image_processor, tokenizer=tiny_tokenizer(),
                          num_query_tokens=num_query_tokens)


def image_token_id(processor) -> int:
    """The id the processor gives ``<image>``, the placeholder of the query tokens (the model's image_token_index)."""
    return processor.tokenizer.convert_tokens_to_ids("<image>")


def build_tiny_blip2(directory: str | Path, seed: int = 0, silent: bool = False) -> Path:
    """Write the tiny model to ``directory`` (config, safetensors weights, processor) and return it.

    Its generation config lets it write printable ASCII only (random bytes would mostly decode to
    nothing), so its meaningless captions are visibly meaningless rather than empty.
    ``silent=True`` makes a model that can only end its text at once: what a captioner that sees
    nothing worth saying does.
    """
    import torch
    from transformers import Blip2ForConditionalGeneration

    directory = Path(directory)
    processor = tiny_processor(IMAGE_SIZE, NUM_QUERY_TOKENS)
    config = tiny_blip2_config(vocab_size=len(processor.tokenizer), image_token_index=image_token_id(processor))
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    allowed = {config.text_config.eos_token_id}
    if not silent:
        printable = processor.tokenizer.convert_tokens_to_ids(byte_symbols(range(0x20, 0x7F)))
        allowed.update(printable)
    model.generation_config.suppress_tokens = [i for i in range(config.text_config.vocab_size) if i not in allowed]
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def byte_symbols(byte_values: Iterable[int]) -> list[str]:
    """The byte-level BPE symbols of raw bytes (space is "Ġ", and so on)."""
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return [pre.pre_tokenize_str(chr(b))[0][0] for b in byte_values]


def tiny_model_cli(argv: Sequence[str] | None, module: str, description: str,
                   build: Callable[..., Path], model_name: str) -> int:
    """``python -m demo.<module> DIR [--seed N]``: build a tiny model into DIR and print where, as JSON."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="where to write the model (created)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    path = build(args.directory, seed=args.seed)
    print(json.dumps({"model": str(path), "caption_model": model_name}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return tiny_model_cli(argv, "demo.tiny_blip2", __doc__, build_tiny_blip2, TINY_MODEL_NAME)


if __name__ == "__main__":
    sys.exit(main())
