"""Tiny random-weight OWLv2 and OWL-ViT models saved as Hugging Face folders (offline: a CLIP
tokenizer over the synthetic vocabulary of :mod:`tiny_clip`)."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_clip import BOS, EOS, clip_tokenizer, vocab_and_merges  # tests/grounders/tiny_clip.py

from vgtool.torchvision_compat import ensure_torchvision_importable

# family -> (vision image_size, patch_size); OWL-ViT gets 3 x 3 patches, OWLv2 4 x 4
SIZES = {"owlv2": (64, 16), "owlvit": (96, 32)}


def save_tiny_owl(family: str, folder: Path, *, seed: int = 0) -> Path:
    """Build a tiny random OWL model of ``family`` and save it with its processor into ``folder``."""
    ensure_torchvision_importable()
    import transformers

    vocab, _ = vocab_and_merges()
    image_size, patch_size = SIZES[family]
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=16,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    prefix = "Owlv2" if family == "owlv2" else "OwlViT"
    config = getattr(transformers, f"{prefix}Config")(
        text_config=text, vision_config=vision, projection_dim=32, initializer_range=0.02
    )
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForObjectDetection")(config).eval()
    size = {"height": image_size, "width": image_size}
    image_processor = getattr(transformers, f"{prefix}ImageProcessor")(size=size, crop_size=size)
    tokenizer = clip_tokenizer(pad_token="!", model_max_length=16)
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=image_processor, tokenizer=tokenizer
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
