"""Vision backbones: a timm model by name, or a Hugging Face vision model through transformers.

Naming: ``VisionConfig.source`` says where ``name`` lives, shown as ``timm:NAME`` or ``hf:NAME``.
Both return a patch feature map, so the rest of the model does not care which source it came from.
A timm model built with ``features_only`` (``kwargs``) returns the last of its ``out_indices`` maps,
e.g. HRNet's 512-channel stride-16 map with ``{"features_only": true, "out_indices": [3]}``.
"""

from __future__ import annotations

import torch
from torch import nn

from vgtool.errors import ModelSourceError
from vgtool.models.config import VisionConfig
from vgtool.models.hub import quiet_transformers, resolve_pretrained_error
from vgtool.torchvision_compat import ensure_torchvision_importable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionBackbone(nn.Module):
    """Wraps a backbone so that ``forward`` returns its patch tokens as a feature map.

    Attributes:
        embed_dim: channels of the returned feature map.
        image_size: square input side the model expects, in pixels.
        mean, std: per-channel normalisation of RGB in [0, 1].
    """

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        ensure_torchvision_importable()
        if config.source == "timm":
            self._build_timm(config)
        else:
            self._build_hf(config)

    def _build_timm(self, config: VisionConfig) -> None:
        import timm

        kwargs = dict(config.kwargs)
        if config.image_size is not None:
            kwargs.setdefault("img_size", config.image_size)
        try:
            try:
                model = timm.create_model(config.name, pretrained=config.pretrained, num_classes=0, **kwargs)
            except TypeError:
                kwargs.pop("img_size", None)  # CNNs take any size and have no img_size argument
                model = timm.create_model(config.name, pretrained=config.pretrained, num_classes=0, **kwargs)
        except RuntimeError as err:
            if "Unknown model" in str(err):
                raise ModelSourceError(f"timm has no model named {config.name!r}") from err
            raise resolve_pretrained_error(f"timm:{config.name}", err) from err
        except OSError as err:
            raise resolve_pretrained_error(f"timm:{config.name}", err) from err
        data_config = timm.data.resolve_model_data_config(model)
        self.model = model
        self.kind = "timm"
        self.features_only = bool(kwargs.get("features_only"))
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        if self.features_only:
            _drop_unused_hrnet_heads(model)
            self.embed_dim = int(model.feature_info.channels()[-1])
        else:
            self.embed_dim = int(getattr(model, "num_features", 0) or model.feature_info[-1]["num_chs"])
        self.image_size = int(config.image_size or data_config["input_size"][-1])
        patch_embed = getattr(model, "patch_embed", None)
        patch = getattr(patch_embed, "patch_size", None)
        self.patch_size = int(patch[0] if isinstance(patch, tuple | list) else patch) if patch else None
        self.mean = tuple(float(v) for v in data_config["mean"])
        self.std = tuple(float(v) for v in data_config["std"])

    def _build_hf(self, config: VisionConfig) -> None:
        quiet_transformers()
        from transformers import AutoConfig, AutoModel

        try:
            if config.pretrained:
                model = AutoModel.from_pretrained(config.name, **config.kwargs)
            else:
                hf_config = AutoConfig.from_pretrained(config.name, **config.kwargs)
                model = AutoModel.from_config(hf_config)
        except (OSError, ValueError) as err:
            raise resolve_pretrained_error(f"hf:{config.name}", err) from err
        hf_config = model.config
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        try:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(config.name)
            mean = tuple(float(v) for v in processor.image_mean)
            std = tuple(float(v) for v in processor.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            pass
        self.model = model
        self.kind = "hf"
        self.num_prefix_tokens = 1 + int(getattr(hf_config, "num_register_tokens", 0) or 0)
        self.embed_dim = int(hf_config.hidden_size)
        self.image_size = int(config.image_size or getattr(hf_config, "image_size", 224))
        patch = getattr(hf_config, "patch_size", None)
        self.patch_size = int(patch[0] if isinstance(patch, tuple | list) else patch) if patch else None
        self.mean, self.std = mean, std

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised with ``mean``/``std``.

        Returns:
            ``[B, C, h, w]`` patch features, ``C = embed_dim``.
        """
        if self.kind == "timm" and self.features_only:
            features = self.model(pixel_values)[-1]
        elif self.kind == "timm":
            features = self.model.forward_features(pixel_values)
        else:
            features = self.model(pixel_values=pixel_values).last_hidden_state
        if features.ndim == 4:  # CNN feature map
            return features
        tokens = features[:, self.num_prefix_tokens :]
        batch, length, channels = tokens.shape
        height, width = self._grid(pixel_values, length)
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)

    def _grid(self, pixel_values: torch.Tensor, length: int) -> tuple[int, int]:
        in_h, in_w = pixel_values.shape[-2:]
        if self.patch_size and (in_h // self.patch_size) * (in_w // self.patch_size) == length:
            return in_h // self.patch_size, in_w // self.patch_size
        raise ModelSourceError(
            f"{self.config.spec}: {length} patch tokens do not form a grid for a {in_h}x{in_w} input"
        )


def _drop_unused_hrnet_heads(model: nn.Module) -> None:
    """timm's HRNet feature model fuses every branch into every output of its last stage and runs a
    channel-increasing head on each, but returns only the ``out_indices`` outputs: the others would
    be computed for nothing and, trained, get no gradient (which distributed training rejects). Their
    fusion and head become identities; the kept outputs are unchanged. Other models are left alone."""
    heads = getattr(model, "incre_modules", None)
    wanted = getattr(model, "_out_idx", None)
    last_stage = getattr(model, "stage4", None)
    if heads is None or wanted is None or last_stage is None:
        return
    fuse_layers = getattr(last_stage[-1], "fuse_layers", None)
    for branch in range(len(heads)):
        if branch + 1 in wanted:  # output i + 1 is branch i; output 0 is the stem
            continue
        heads[branch] = nn.Identity()
        if fuse_layers is not None and branch < len(fuse_layers):
            fuse_layers[branch] = nn.ModuleList([nn.Identity()])  # passes branch 0 through, unused
