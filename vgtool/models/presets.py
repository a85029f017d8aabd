"""Named model presets. ``vgtool init --preset NAME`` and recipes refer to these by name."""

from __future__ import annotations

from collections.abc import Sequence

from vgtool.config import apply_overrides, from_dict, to_dict
from vgtool.errors import ConfigError
from vgtool.models.config import DecoderConfig, ModelConfig, TextConfig, VisionConfig
from vgtool.models.fusion_config import FusionConfig
from vgtool.models.textquery_config import TextQueryConfig

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# A random MiniLM-shaped text encoder, one layer of width 32: tiny test models build it offline.
TINY_TEXT = TextConfig(
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
)
# A random CLIP RN50 shrunk to 32-d embeddings (open_clip model-config overrides), offline.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8, "image_size": 64},
    "text_cfg": {"width": 32, "heads": 2, "layers": 1},
}
# timm's test ViT (width 64) at 64 px, random: 16 patch tokens.
TINY_VISION = VisionConfig(
    source="timm", name="test_vit", pretrained=False, frozen=False, image_size=64, kwargs={"patch_size": 16}
)

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
        vision=TINY_VISION,
        text=TINY_TEXT,
        decoder=DecoderConfig(d_model=32, num_layers=2, num_heads=2, ffn_dim=64, dropout=0.0, num_queries=4),
    ),
    # The seed system "DINOv3 + BGE": both encoders frozen, the phrase's tokens query the image's
    # through a 6-layer, 8-head decoder of width 512; one box per phrase (train/dinov3_bge_refcoco.yaml).
    "textquery-dinov3b-bge": ModelConfig(
        architecture="textquery",
        vision=VisionConfig(source="hf", name="facebook/dinov3-vitb16-pretrain-lvd1689m", image_size=224),
        text=TextConfig(name="BAAI/bge-small-en-v1.5"),
        textquery=TextQueryConfig(d_model=512, num_layers=6, num_heads=8, ffn_dim=2048, box_hidden=256),
    ),
    # Tiny and random, the text-as-query family's counterpart of vlgtr-tiny.
    "textquery-tiny": ModelConfig(
        architecture="textquery",
        vision=TINY_VISION,
        text=TINY_TEXT,
        textquery=TextQueryConfig(
            d_model=32, num_layers=2, num_heads=2, ffn_dim=64, dropout=0.0, box_hidden=32
        ),
    ),
    # The seed system "CLIP + HRNet" (train/clip_hrnet_refcocog.yaml): OpenAI's CLIP RN50 image and
    # text embeddings (1024-d) and HRNet-W18's 512-channel stride-16 map (14 x 14 at 224 px), all
    # frozen; 1x1 convolutions to 128 + 128 + 64 channels, convolutions to a pooled 256-vector, and a
    # regressor of one box per phrase.
    "fusion-clip-rn50-hrnet": ModelConfig(
        architecture="fusion",
        vision=VisionConfig(
            source="timm",
            name="hrnet_w18.ms_aug_in1k",
            image_size=224,
            kwargs={"features_only": True, "out_indices": [3]},
        ),
        text=TextConfig(source="open_clip", name="RN50:openai", max_length=77),
        fusion=FusionConfig(
            clip_image="RN50:openai", embed_channels=128, map_channels=64, fused_dim=256, regressor_dim=256
        ),
    ),
    # Tiny and random, the fusion family's counterpart of vlgtr-tiny: timm's test ResNet (192 channels
    # at stride 16: 4 x 4 at 64 px) and a CLIP RN50 shrunk to width 8 / 32 with 32-d embeddings.
    "fusion-tiny": ModelConfig(
        architecture="fusion",
        vision=VisionConfig(
            source="timm",
            name="test_resnet",
            pretrained=False,
            frozen=False,
            image_size=64,
            kwargs={"features_only": True, "out_indices": [3]},
        ),
        text=TextConfig(
            source="open_clip",
            name="RN50",
            pretrained=False,
            frozen=False,
            max_length=24,
            overrides=TINY_CLIP,
        ),
        fusion=FusionConfig(
            clip_image="RN50",
            clip_overrides=TINY_CLIP,
            embed_channels=16,
            map_channels=8,
            fused_dim=32,
            fusion_layers=1,
            regressor_dim=32,
            dropout=0.0,
        ),
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
