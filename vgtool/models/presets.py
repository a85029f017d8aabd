"""Named model presets. ``vgtool init --preset NAME`` and recipes refer to these by name."""

from __future__ import annotations

from collections.abc import Sequence

from vgtool.config import apply_overrides, from_dict, to_dict
from vgtool.errors import ConfigError
from vgtool.models.config import DecoderConfig, ModelConfig, TextConfig, VisionConfig

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

PRESETS: dict[str, ModelConfig] = {
    # The seed setup: DINOv2 ViT-S/14 with registers + RoBERTa-base, 10 queries.
    "vlgtr-dinov2s-roberta": ModelConfig(
        vision=VisionConfig(source="timm", name="vit_small_patch14_reg4_dinov2.lvd142m", image_size=224),
        text=TextConfig(name="roberta-base"),
        decoder=DecoderConfig(d_model=256, num_layers=6, num_heads=8, ffn_dim=1024, num_queries=10),
    ),
    "vlgtr-dinov2s-bge": ModelConfig(
        vision=VisionConfig(source="timm", name="vit_small_patch14_reg4_dinov2.lvd142m", image_size=224),
        text=TextConfig(name="BAAI/bge-small-en-v1.5"),
    ),
    "vlgtr-dinov2s-minilm": ModelConfig(
        vision=VisionConfig(source="timm", name="vit_small_patch14_reg4_dinov2.lvd142m", image_size=224),
        text=TextConfig(name=MINILM),
    ),
    # DINOv2 through transformers instead of timm.
    "vlgtr-hf-dinov2s-roberta": ModelConfig(
        vision=VisionConfig(source="hf", name="facebook/dinov2-small", image_size=224),
        text=TextConfig(name="roberta-base"),
    ),
    # The bundled default model (train/vlgtr_synth_default.yaml): a small ResNet trained from scratch
    # on `vgtool synth` data (8x8 feature map at 128 px), two-stage decoding, and the pretrained
    # MiniLM text encoder kept frozen (referenced by name, so the checkpoint stays small).
    "vlgtr-synth-small": ModelConfig(
        vision=VisionConfig(
            source="timm",
            name="resnet18",
            pretrained=False,
            frozen=False,
            image_size=128,
            kwargs={
                "layers": [1, 1, 1, 1],
                "channels": [32, 64, 96, 128],
                "stem_width": 32,
                "output_stride": 16,
            },
        ),
        text=TextConfig(name=MINILM, pretrained=True, frozen=True, max_length=24),
        decoder=DecoderConfig(
            d_model=128,
            num_layers=4,
            num_heads=4,
            ffn_dim=512,
            dropout=0.0,
            num_queries=10,
            query_selection=True,
        ),
    ),
    # Tiny and random: builds offline in about a second. For tests and pipeline checks only.
    "vlgtr-tiny": ModelConfig(
        vision=VisionConfig(
            source="timm",
            name="test_vit",
            pretrained=False,
            frozen=False,
            image_size=64,
            kwargs={"patch_size": 16},
        ),
        text=TextConfig(
            name=MINILM,
            pretrained=False,
            frozen=False,
            max_length=24,
            overrides={
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
        ),
        decoder=DecoderConfig(d_model=32, num_layers=2, num_heads=2, ffn_dim=64, dropout=0.0, num_queries=4),
    ),
}

DEFAULT_PRESET = "vlgtr-dinov2s-roberta"


def get_preset(name: str) -> ModelConfig:
    """The preset ``name``.

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None


def preset_names() -> list[str]:
    return sorted(PRESETS)


def config_from_preset(preset: str, overrides: Sequence[str] = ()) -> ModelConfig:
    """The preset's config with ``key.path=value`` overrides applied and type-checked."""
    return from_dict(ModelConfig, apply_overrides(to_dict(get_preset(preset)), overrides))
