"""Tiny, UNTRAINED stand-ins for the text encoder and the VAE, built from configs with random weights.

They have the real classes and the real on-disk layout (``save_pretrained``), so tests and the demo
exercise the real loading and training code without downloading weights. Their outputs mean
nothing: anything trained or sampled with them is a test of the machinery, not a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_TEXT_TOKENS = 16
TINY_TEXT_HIDDEN = 32


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with byte-level characters only (no merges): every caption still tokenizes."""
    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = TINY_TEXT_TOKENS
    return tokenizer


def make_tiny_pretrained(root: str | Path, seed: int = 0) -> dict[str, str]:
    """Write an untrained tiny CLIP text model, its tokenizer and a tiny 8x-down VAE under ``root``.

    Returns the ``model`` config entries (``text_encoder``, ``tokenizer``, ``vae``) pointing at them.
    """
    root = Path(root)
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TINY_TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TINY_TEXT_TOKENS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    vae = AutoencoderKL(  # four levels, so 8x down like Stable Diffusion's VAE, with few channels
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    paths = {"text_encoder": root / "text_encoder", "tokenizer": root / "tokenizer", "vae": root / "vae"}
    text.save_pretrained(paths["text_encoder"])
    tokenizer.save_pretrained(paths["tokenizer"])
    vae.save_pretrained(paths["vae"])
    return {k: str(v) for k, v in paths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.tiny_training", description=__doc__)
    parser.add_argument("dir", nargs="?", default="outputs/tiny-pretrained",
                        help="where to write text_encoder/, tokenizer/ and vae/ (default: outputs/tiny-pretrained, "
                             "where configs/train_tiny.yaml looks)")
    for name, path in make_tiny_pretrained(parser.parse_args().dir).items():
        print(f"{name}: {path}  (UNTRAINED test model)")


if __name__ == "__main__":
    main()
