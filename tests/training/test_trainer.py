"""End-to-end training: resume exactness, divergence handling, recipes and the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vgtool.config import to_dict
from vgtool.training.config import load_recipe, recipe_from_mapping
from vgtool.training.data import epoch_order, grouped_epoch_order
from vgtool.training.trainer import TrainingDivergedError, train


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 10, seed=3, image_size=(96, 96), phrases_per_image=2)
    return root


def _recipe(data, **extra):
    mapping = {
        "model": {"preset": "vlgtr-tiny"},
        "data": {
            "train": {"format": "coco", "path": str(data), "split": "train"},
            "val": {"format": "coco", "path": str(data), "split": "val"},
        },
        "augment": {"hflip": 0.5, "random_resized_crop": 0.0},
        "stages": [
            {"name": "frozen", "epochs": 2, "lr": 1e-3, "warmup_steps": 2},
            {"name": "unfrozen", "epochs": 1, "lr": 5e-4, "vision_lr": 1e-4},
        ],
        "batch_size": 4,
        "log_every_steps": 1,
    }
    mapping.update(extra)
    return recipe_from_mapping(mapping)


def _conv_model(width: int) -> dict:
    """A tiny ResNet; its first downsampling shortcut is a strided 1x1 convolution of ``width`` channels."""
    return {
        "preset": "vlgtr-tiny",
        "vision": {
            "name": "resnet18",
            "image_size": 64,
            "kwargs": {"layers": [1, 1, 1, 1], "channels": [width, width, 32, 32], "stem_width": width},
        },
    }


# Trained channels-last (see vgtool.models.memory_format.prefers_channels_last).
CONV_MODEL = _conv_model(16)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"model": CONV_MODEL},
        {"model": {"preset": "vlgtr-tiny", "decoder": {"dropout": 0.1}}},
    ],
    ids=["plain", "conv-backbone", "dropout"],
)
def test_resumed_run_ends_with_the_same_parameters(synth_data, tmp_path, extra):
    recipe = _recipe(synth_data, save_every_steps=3, **extra)
    train(recipe, tmp_path / "full", quiet=True)
    _train_until(recipe, tmp_path / "cut", 7)  # mid-epoch, after the save at step 6
    state = json.loads((tmp_path / "cut" / "last" / "train_state.json").read_text())
    assert state["counters"]["step"] == 6 and state["counters"]["batch"] > 0
    train(recipe, tmp_path / "cut", quiet=True, resume=True)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    train_steps = [
        json.loads(line)["step"] for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == train_steps  # the resumed log has no repeated or missing lines
    _assert_same_weights(tmp_path / "full" / "last", tmp_path / "cut" / "last")


@pytest.mark.parametrize(
    "second_stage",
    [
        {"name": "unfrozen", "epochs": 1, "lr": 5e-4, "vision_lr": 1e-4},
        {"name": "lower-lr", "epochs": 1, "lr": 5e-4},
    ],
    ids=["more-groups", "same-groups"],
)
def test_a_run_resumed_from_the_save_between_two_stages_ends_with_the_same_parameters(
    synth_data, tmp_path, second_stage
):
    """``last/`` saved at the end of a stage holds that stage's optimizer; the next stage starts
    with a new one, resumed or not (whether or not it trains more parameter groups)."""
    first_stage = {"name": "frozen", "epochs": 2, "lr": 1e-3, "warmup_steps": 2}
    recipe = _recipe(synth_data, stages=[first_stage, second_stage])
    steps: list[int] = []
    train(recipe, tmp_path / "full", quiet=True, on_step=steps.append)
    _train_until(recipe, tmp_path / "cut", 2 * len(steps) // 3 + 1)  # the first step of stage 2
    counters = json.loads((tmp_path / "cut" / "last" / "train_state.json").read_text())["counters"]
    assert (counters["stage"], counters["epoch"], counters["batch"]) == (1, 0, 0)  # stage 1's last save
    train(recipe, tmp_path / "cut", quiet=True, resume=True)
    assert [r["step"] for r in _losses(tmp_path / "cut")] == steps
    _assert_same_weights(tmp_path / "full" / "last", tmp_path / "cut" / "last")


class _Interrupt(Exception):
    pass


def _train_until(recipe, out_dir, step: int) -> None:
    """Train into ``out_dir`` and stop right after optimizer step ``step``, as a kill would."""

    def stop(done):
        if done == step:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(recipe, out_dir, quiet=True, on_step=stop)


def _assert_same_weights(expected_dir, actual_dir) -> None:
    expected = load_file(str(expected_dir / "model.safetensors"))
    actual = load_file(str(actual_dir / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_a_convolutional_backbone_trains_channels_last_with_the_same_losses(
    synth_data, tmp_path, monkeypatch
):
    from vgtool.models import vlgtr

    stages = [{"name": "s", "epochs": 1, "lr": 1e-3}]
    recipe = _recipe(synth_data, model=CONV_MODEL, stages=stages)
    formats = []
    monkeypatch.setattr(
        vlgtr.VLGTR,
        "forward",
        _recording_forward(vlgtr.VLGTR.forward, formats),
    )
    train(recipe, tmp_path / "channels-last", quiet=True)
    assert formats and all(formats)  # every training step ran the backbone on channels-last weights
    formats.clear()
    monkeypatch.setattr("vgtool.training.trainer.prefers_channels_last", lambda net, device: False)
    train(recipe, tmp_path / "contiguous", quiet=True)
    assert formats and not any(formats)
    losses = {name: [r["loss"] for r in _losses(tmp_path / name)] for name in ("channels-last", "contiguous")}
    assert len(losses["channels-last"]) == len(losses["contiguous"]) > 1
    # the same math in another memory layout: equal up to float rounding
    assert losses["channels-last"] == pytest.approx(losses["contiguous"], rel=1e-3)
    # the checkpoint stores plain contiguous tensors and loads as any other
    from vgtool.checkpoint import load_checkpoint

    weights = load_file(str(tmp_path / "channels-last" / "last" / "model.safetensors"))
    assert all(tensor.is_contiguous() for tensor in weights.values())
    load_checkpoint(tmp_path / "channels-last" / "last")


def test_a_backbone_that_oneDNN_cannot_train_channels_last_trains_contiguous(
    synth_data, tmp_path, monkeypatch
):
    from vgtool.models import vlgtr

    # 8-channel strided 1x1 convolutions: their channels-last weight gradient crashes oneDNN's AVX-512
    # kernel for some batch sizes (here, batches of 3 distinct images)
    stages = [{"name": "s", "epochs": 2, "lr": 1e-3}]
    recipe = _recipe(synth_data, model=_conv_model(8), stages=stages)
    formats = []
    monkeypatch.setattr(vlgtr.VLGTR, "forward", _recording_forward(vlgtr.VLGTR.forward, formats))
    result = train(recipe, tmp_path / "run", quiet=True)
    assert result["counters"]["step"] == len(formats) > 0
    assert not any(formats)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns(synth_data, tmp_path, monkeypatch, caplog, native):
    monkeypatch.setattr("vgtool.training.trainer.cpu_supports_bf16", lambda: native)
    stages = [{"name": "s", "epochs": 1, "lr": 1e-3}]
    with caplog.at_level("WARNING", logger="vgtool.training.trainer"):
        result = train(
            _recipe(synth_data, stages=stages, amp="bf16", device="cpu"), tmp_path / "run", quiet=True
        )
    assert result["counters"]["step"] > 0  # it trains either way
    warned = [r.getMessage() for r in caplog.records if "native bf16" in r.getMessage()]
    assert len(warned) == (0 if native else 1)
    assert not warned or "amp: none" in warned[0]


def _recording_forward(forward, formats):
    def recorded(self, *args, **kwargs):
        if self.training:
            conv = next(m for m in self.vision.modules() if isinstance(m, torch.nn.Conv2d))
            formats.append(conv.weight.is_contiguous(memory_format=torch.channels_last))
        return forward(self, *args, **kwargs)

    return recorded


def test_outputs_and_two_stage_bookkeeping(synth_data, tmp_path):
    result = train(_recipe(synth_data), tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    for name in ("recipe.json", "metrics.jsonl", "curves.png", "last/config.json", "best/model.safetensors"):
        assert (run / name).exists(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} == {"train", "val"}
    assert all("acc@0.5" in r for r in records if r["type"] == "val")
    assert all(0 < r["grad_norm"] < float("inf") for r in records if r["type"] == "train")
    assert result["counters"]["stage"] == 2
    # stage 2 trained the vision backbone, so the checkpoint stores it and records it as unfrozen
    config = json.loads((run / "last" / "config.json").read_text())
    assert config["model"]["vision"]["frozen"] is False
    from vgtool.checkpoint import load_checkpoint

    load_checkpoint(run / "last")
    load_checkpoint(run / "best")


def test_logged_gradient_norm_is_the_one_before_clipping(synth_data, tmp_path):
    stages = [{"name": "s", "epochs": 1, "lr": 1e-3}]
    clipped = train(_recipe(synth_data, stages=stages, grad_clip=1e-6), tmp_path / "clip", quiet=True)
    unclipped = train(_recipe(synth_data, stages=stages, grad_clip=0.0), tmp_path / "none", quiet=True)
    norms = {}
    for name, result in (("clip", clipped), ("none", unclipped)):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        norms[name] = [json.loads(line)["grad_norm"] for line in lines if '"train"' in line]
        assert result["counters"]["step"] == len(norms[name])
    # the first step sees the same weights and batch either way: the same norm, far above the clip
    assert norms["clip"][0] == pytest.approx(norms["none"][0], rel=1e-4)
    assert min(norms["clip"]) > 1e-3


def test_refuses_to_overwrite_an_earlier_run_without_resume(synth_data, tmp_path):
    from vgtool.errors import InputError

    recipe = _recipe(synth_data, stages=[{"name": "s", "epochs": 1, "lr": 1e-3}])
    train(recipe, tmp_path / "run", quiet=True)
    with pytest.raises(InputError, match="--resume"):
        train(recipe, tmp_path / "run", quiet=True)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_last_good(synth_data, tmp_path):
    recipe = _recipe(synth_data, stages=[{"name": "s", "epochs": 1, "lr": 1e-3}])
    train(recipe, tmp_path / "run", quiet=True)
    good = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    from vgtool.checkpoint import load_checkpoint, save_checkpoint

    poisoned = load_checkpoint(tmp_path / "run" / "last")
    with torch.no_grad():
        poisoned.box_head.layers[-1].bias.fill_(float("nan"))
    save_checkpoint(poisoned, tmp_path / "poisoned")
    bad = _recipe(synth_data, init_from=str(tmp_path / "poisoned"))
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        train(bad, tmp_path / "diverged", quiet=True)
    assert not (tmp_path / "diverged" / "last").exists()  # nothing bad was saved
    assert torch.isfinite(good["class_head.weight"]).all()


def test_unwritable_output_fails_early(synth_data, tmp_path):
    from vgtool.errors import InputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not writable"):
        train(_recipe(synth_data), blocker / "run", quiet=True)


RECIPES_DIR = Path(__file__).parents[2] / "train"


@pytest.mark.parametrize(
    "name", sorted(p.name for p in RECIPES_DIR.glob("*.yaml") if not p.name.startswith("tune_space"))
)
def test_committed_recipes_parse(name):

    recipe = load_recipe(RECIPES_DIR / name, ["batch_size=2"])
    assert recipe.batch_size == 2 and recipe.stages


def test_the_heads_benchmark_recipes_differ_only_in_the_head():
    """train/heads_synth_*.yaml: one data set, backbone, text encoder, schedule; three heads."""
    recipes = {
        h: load_recipe(RECIPES_DIR / f"heads_synth_{h}.yaml") for h in ("vlgtr", "textquery", "fusion")
    }
    assert {h: r.model.architecture for h, r in recipes.items()} == {h: h for h in recipes}
    first = recipes["vlgtr"]
    for recipe in recipes.values():
        assert recipe.model.vision == first.model.vision and recipe.model.text == first.model.text
        assert recipe.data == first.data and recipe.stages == first.stages
        assert (recipe.batch_size, recipe.amp, recipe.seed) == (first.batch_size, first.amp, first.seed)


def test_seed_recipes_follow_the_two_stage_design():
    from pathlib import Path

    for name in ("vlgtr_flickr30k.yaml", "vlgtr_refcoco.yaml"):
        recipe = load_recipe(Path(__file__).parents[2] / "train" / name)
        first, second = recipe.stages
        assert first.vision_lr == 0 and first.text_lr == 0
        assert second.vision_lr == pytest.approx(1e-5) and second.text_lr == 0
        assert recipe.model.decoder.num_queries == 10
        assert recipe.model.vision.name == "vit_small_patch14_reg4_dinov2.lvd142m"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages=[]", "at least one stage"),
        ("batch_size=0", "batch_size"),
        ("nope=1", "unknown config key nope"),
        ("augment.hflip=yes", "expected a number"),
    ],
)
def test_bad_recipes_are_refused(override, message):
    from pathlib import Path

    from vgtool.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match=message):
        load_recipe(Path(__file__).parents[2] / "train" / "tiny_synth.yaml", [override])


def test_full_disk_fails_early(synth_data, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from vgtool.errors import InputError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(InputError, match="MiB free"):
        train(_recipe(synth_data), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "last").exists()


def _frozen_recipe(data, augment, epochs=2, **extra):
    """One frozen-backbone stage (then, with ``unfrozen``, a vision-training one); no validation."""
    stages = [{"name": "frozen", "epochs": epochs, "lr": 1e-3, "warmup_steps": 2}]
    if extra.pop("unfrozen", False):
        stages.append({"name": "unfrozen", "epochs": 1, "lr": 5e-4, "vision_lr": 1e-4})
    mapping = {"augment": augment, "stages": stages, "eval_every_epochs": 100}
    recipe = _recipe(data, **mapping, **extra)
    return recipe_from_mapping({**to_dict(recipe), "data": {**to_dict(recipe)["data"], "val": None}})


def _losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "train"]


def test_cached_and_uncached_training_give_the_same_losses(synth_data, tmp_path):
    augment = {"hflip": 0.5, "random_resized_crop": 0.0}
    train(_frozen_recipe(synth_data, augment, cache_features=False), tmp_path / "plain", quiet=True)
    train(_frozen_recipe(synth_data, augment, cache_features=True), tmp_path / "cached", quiet=True)
    plain, cached = _losses(tmp_path / "plain"), _losses(tmp_path / "cached")
    assert [r["step"] for r in plain] == [r["step"] for r in cached]
    assert "image_cache_hits" in cached[-1] and "image_cache_hits" not in plain[-1]
    assert cached[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-4)  # the same first batch
    for p, c in zip(plain, cached, strict=True):  # later steps drift only by fp16 rounding
        assert c["loss"] == pytest.approx(p["loss"], rel=1e-3), p["step"]


class _Spy:
    """Counts the rows the vision backbone encodes and the images the data loader decodes."""

    def __init__(self, monkeypatch):
        from vgtool.models.vision import VisionBackbone
        from vgtool.training import data

        self.encoded, self.decoded, self.per_step = 0, 0, []
        forward, load = VisionBackbone.forward, data.load_rgb

        def counting_forward(module, pixel_values):
            self.encoded += len(pixel_values)
            return forward(module, pixel_values)

        def counting_load(path):
            self.decoded += 1
            return load(path)

        monkeypatch.setattr(VisionBackbone, "forward", counting_forward)
        monkeypatch.setattr(data, "load_rgb", counting_load)

    def on_step(self, step):
        self.per_step.append((self.encoded, self.decoded))

    def between(self, first_step, last_step):
        """(rows encoded, images decoded) during steps first_step..last_step (1-based)."""
        before = self.per_step[first_step - 2] if first_step > 1 else (0, 0)
        after = self.per_step[last_step - 1]
        return after[0] - before[0], after[1] - before[1]


def _distinct_images_per_batch(samples, order, batch_size):
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    return [len({samples[i].image_path for i in batch}) for batch in batches]


def _image_runs(samples, order):
    """Images decoded in an epoch's order: a sample of the same image as the one before reuses it."""
    return 1 + sum(samples[a].image_path != samples[b].image_path for a, b in itertools.pairwise(order))


def test_grouped_order_encodes_each_image_once_per_batch_whatever_its_phrases(
    synth_data, tmp_path, monkeypatch
):
    from vgtool.datasets.registry import load_samples

    augment = {"hflip": 0.5, "random_resized_crop": 0.0}  # the flip is drawn per image
    recipe = _frozen_recipe(synth_data, augment, epochs=1, group_by_image=True, batch_size=6)
    recipe = recipe_from_mapping(
        {**to_dict(recipe), "stages": [{"epochs": 2, "lr": 1e-3, "vision_lr": 1e-3}]}
    )
    samples = load_samples(recipe.data.train)
    spy = _Spy(monkeypatch)
    train(recipe, tmp_path / "run", quiet=True, on_step=spy.on_step)
    steps = -(-len(samples) // recipe.batch_size)
    numbers: dict[str, int] = {}
    image_numbers = [numbers.setdefault(str(s.image_path), len(numbers)) for s in samples]
    for epoch in (0, 1):
        order = grouped_epoch_order(image_numbers, recipe.seed, epoch)
        per_batch = _distinct_images_per_batch(samples, order, recipe.batch_size)
        encoded, decoded = spy.between(epoch * steps + 1, (epoch + 1) * steps)
        assert encoded == sum(per_batch) < len(samples)
        assert decoded == len(numbers)  # an image's later phrases reuse its decoded pixels


def test_cache_encodes_and_decodes_each_image_once_while_the_backbone_is_frozen(
    synth_data, tmp_path, monkeypatch
):
    from vgtool.datasets.registry import load_samples

    recipe = _frozen_recipe(
        synth_data, {"hflip": 0.0, "random_resized_crop": 0.0}, cache_features=True, unfrozen=True
    )
    samples = load_samples(recipe.data.train)
    steps = -(-len(samples) // recipe.batch_size)
    images = len({s.image_path for s in samples})
    assert images < len(samples)
    spy = _Spy(monkeypatch)
    train(recipe, tmp_path / "run", quiet=True, on_step=spy.on_step)
    encoded, decoded = spy.between(1, steps)  # stage 1, epoch 1: fills the cache
    assert encoded == images and images <= decoded < len(samples)
    assert spy.between(steps + 1, 2 * steps) == (0, 0)  # epoch 2: nothing encoded or decoded
    # stage 2 trains the vision backbone: every sample is decoded, and each batch encodes its images
    per_batch = _distinct_images_per_batch(
        samples, epoch_order(len(samples), recipe.seed, 2), recipe.batch_size
    )
    runs = _image_runs(samples, epoch_order(len(samples), recipe.seed, 2))
    assert spy.between(2 * steps + 1, 3 * steps) == (sum(per_batch), runs)  # a repeat reuses the pixels
    records = _losses(tmp_path / "run")
    assert all(("image_cache_hits" in r) == (r["step"] <= 2 * steps) for r in records)


@pytest.mark.parametrize(
    ("augment", "extra"),
    [
        ({"hflip": 0.0, "random_resized_crop": 0.5}, {}),
        ({"hflip": 0.0, "random_resized_crop": 0.0, "color_jitter": 0.2}, {}),
        ({"hflip": 0.0, "random_resized_crop": 0.0}, {"stages": [{"epochs": 1, "vision_lr": 1e-4}]}),
    ],
    ids=["crop", "jitter", "vision-trained"],
)
def test_cache_is_not_used_when_the_backbone_input_or_weights_change(
    synth_data, tmp_path, monkeypatch, augment, extra
):
    from vgtool.datasets.registry import load_samples

    recipe = _frozen_recipe(synth_data, augment, epochs=1, cache_features=True)
    recipe = recipe_from_mapping({**to_dict(recipe), **extra})
    samples = load_samples(recipe.data.train)
    spy = _Spy(monkeypatch)
    train(recipe, tmp_path / "run", quiet=True, on_step=spy.on_step)
    if augment["random_resized_crop"] or augment.get("color_jitter"):  # a new input per sample
        assert spy.per_step[-1] == (len(samples), len(samples))
    else:  # the vision backbone is trained: each batch encodes its images
        order = epoch_order(len(samples), recipe.seed, 0)
        per_batch = _distinct_images_per_batch(samples, order, recipe.batch_size)
        assert spy.per_step[-1] == (sum(per_batch), _image_runs(samples, order))
    assert not any("image_cache_hits" in r for r in _losses(tmp_path / "run"))


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_resume_with_the_feature_cache_is_exact(synth_data, tmp_path, on_disk):
    recipe = _frozen_recipe(
        synth_data,
        {"hflip": 0.5, "random_resized_crop": 0.0},
        cache_features=True,
        cache_features_on_disk=on_disk,
        unfrozen=True,
        save_every_steps=3,
    )
    train(recipe, tmp_path / "full", quiet=True)
    _train_until(recipe, tmp_path / "cut", 7)  # mid-epoch 2 of the frozen stage, after the save at step 6
    counters = json.loads((tmp_path / "cut" / "last" / "train_state.json").read_text())["counters"]
    assert (counters["stage"], counters["step"]) == (0, 6) and counters["batch"] > 0
    train(recipe, tmp_path / "cut", quiet=True, resume=True)
    assert [r["step"] for r in _losses(tmp_path / "cut")] == [r["step"] for r in _losses(tmp_path / "full")]
    assert (tmp_path / "cut" / "feature_cache").is_dir() == on_disk
    _assert_same_weights(tmp_path / "full" / "last", tmp_path / "cut" / "last")


def test_an_empty_training_set_is_a_clear_error(tmp_path):
    from vgtool.errors import InputError

    (tmp_path / "empty.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    recipe = _recipe(tmp_path / "empty.json")
    with pytest.raises(InputError, match="no training samples"):
        train(recipe, tmp_path / "run", quiet=True)
