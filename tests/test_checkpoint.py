from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from vgtool.checkpoint import (
    config_hash,
    load_checkpoint,
    read_checkpoint_config,
    referenced_parts,
    save_checkpoint,
)
from vgtool.errors import CheckpointError, ConfigError
from vgtool.models.presets import config_from_preset
from vgtool.models.vlgtr import build_model


def _inputs():
    torch.manual_seed(1)
    ids = torch.tensor([[101, 2417, 2482, 102], [101, 3899, 102, 0]])
    return torch.randn(2, 3, 64, 64), ids, (ids > 0).long()


def test_round_trip_gives_identical_outputs(tiny_checkpoint, tmp_path):
    model = load_checkpoint(tiny_checkpoint)
    save_checkpoint(model, tmp_path / "again")
    reloaded = load_checkpoint(tmp_path / "again")
    with torch.no_grad():
        a, b = model(*_inputs()), reloaded(*_inputs())
    assert torch.equal(a["pred_boxes"], b["pred_boxes"])
    assert torch.equal(a["pred_logits"], b["pred_logits"])
    assert reloaded.config == model.config


def test_two_stage_model_round_trips(tmp_path):
    from vgtool.checkpoint import init_checkpoint

    path = init_checkpoint("vlgtr-tiny", tmp_path / "two-stage", ["decoder.query_selection=true"])
    model = load_checkpoint(path)
    with torch.no_grad():  # trained-looking weights everywhere, so that a part left out would show
        torch.manual_seed(0)
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    save_checkpoint(model, tmp_path / "again")
    reloaded = load_checkpoint(tmp_path / "again")
    with torch.no_grad():
        assert torch.equal(model(*_inputs())["pred_boxes"], reloaded(*_inputs())["pred_boxes"])


def test_frozen_pretrained_parts_are_referenced_not_stored(tmp_path):
    """A frozen pretrained text encoder (the packaged MiniLM) is rebuilt by name, not copied."""
    config = config_from_preset("vlgtr-tiny")
    config = replace(config, text=replace(config.text, pretrained=True, frozen=True, overrides={}))
    assert referenced_parts(config) == ["text"]
    model = build_model(config).eval()
    save_checkpoint(model, tmp_path / "ref")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ref" / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any(k.startswith("text.") for k in keys)
    document = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert document["referenced"] == {"text": config.text.name}
    reloaded = load_checkpoint(tmp_path / "ref")
    with torch.no_grad():
        assert torch.equal(model(*_inputs())["pred_boxes"], reloaded(*_inputs())["pred_boxes"])


def _corrupt_truncate(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _corrupt_garbage(path):
    (path / "model.safetensors").write_bytes(b"\x00garbage" * 10)


def _drop_key(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    tensors.pop("class_head.weight")
    save_file(tensors, str(path / "model.safetensors"))


def _extra_key(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    tensors["surprise.weight"] = torch.zeros(2)
    save_file(tensors, str(path / "model.safetensors"))


def _other_architecture(path):
    document = json.loads((path / "config.json").read_text())
    document["model"]["decoder"]["d_model"] = 64
    document["model"]["decoder"]["ffn_dim"] = 128
    (path / "config.json").write_text(json.dumps(document))


def _bad_json(path):
    (path / "config.json").write_text("{not json")


def _not_vgtool(path):
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))


def _missing_weights(path):
    (path / "model.safetensors").unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_corrupt_truncate, "corrupt or truncated"),
        (_corrupt_garbage, "corrupt or truncated"),
        (_drop_key, "1 missing key.*class_head.weight"),
        (_extra_key, "1 unexpected key.*surprise.weight"),
        (_other_architecture, "wrong shape"),
        (_bad_json, "not JSON"),
        (_not_vgtool, "not a vgtool checkpoint"),
        (_missing_weights, "model.safetensors: missing"),
    ],
)
def test_damaged_checkpoints_give_one_clear_error(tiny_checkpoint, tmp_path, damage, message):
    path = tmp_path / "damaged"
    shutil.copytree(tiny_checkpoint, path)
    damage(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        read_checkpoint_config(tmp_path / "nope")


def test_half_precision_storage_halves_the_file_and_loads_back(tiny_checkpoint, tmp_path):
    model = load_checkpoint(tiny_checkpoint)
    save_checkpoint(model, tmp_path / "half", dtype=torch.float16)
    full_size = (tiny_checkpoint / "model.safetensors").stat().st_size
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * full_size
    reloaded = load_checkpoint(tmp_path / "half")
    assert next(reloaded.parameters()).dtype == torch.float32
    with torch.no_grad():
        a, b = model(*_inputs()), reloaded(*_inputs())
    assert torch.allclose(a["pred_boxes"], b["pred_boxes"], atol=2e-2)


def test_export_writes_a_slim_copy_and_keeps_metadata(tiny_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from vgtool.cli.main import app

    model = load_checkpoint(tiny_checkpoint)
    save_checkpoint(model, tmp_path / "trained", extra={"step": 42, "val": {"acc@0.5": 0.5}})
    result = CliRunner().invoke(app, ["export", str(tmp_path / "trained"), "--out", str(tmp_path / "slim")])
    assert result.exit_code == 0, result.output
    assert "MiB" in result.output
    _, document = read_checkpoint_config(tmp_path / "slim")
    assert document["meta"]["step"] == 42 and document["meta"]["exported_from"] == str(tmp_path / "trained")
    full_size = (tmp_path / "trained" / "model.safetensors").stat().st_size
    assert (tmp_path / "slim" / "model.safetensors").stat().st_size < 0.6 * full_size
    with torch.no_grad():
        a, b = model(*_inputs()), load_checkpoint(tmp_path / "slim")(*_inputs())
    assert torch.allclose(a["pred_boxes"], b["pred_boxes"], atol=2e-2)


def test_config_hash_ignores_fields_at_their_default():
    """An option added with a default leaves existing checkpoints' hashes as they were; any change
    of value, nested or not, changes the hash."""
    config = config_from_preset("vlgtr-tiny")
    assert config_hash(config) == config_hash(replace(config, decoder=replace(config.decoder)))
    assert config_hash(config) == config_hash(
        replace(config, decoder=replace(config.decoder, query_selection=False))
    )
    assert config_hash(replace(config, decoder=replace(config.decoder, num_queries=5))) != config_hash(config)
    assert config_hash(replace(config, text=replace(config.text, max_length=9))) != config_hash(config)


BUNDLED_CONFIG_HASH = "c7a0447817e04401"  # recorded before the options below were removed


def test_bundled_model_keeps_its_config_hash():
    """The bundled model's config.json still holds the retired fields (at their defaults); they are
    dropped before hashing, so its hash, part of run manifests, is what it was."""
    from vgtool.models.bundled import DEFAULT_MODEL_DIR

    config, document = read_checkpoint_config(DEFAULT_MODEL_DIR)
    assert {"encoder", "phrase_encoder", "categories"} <= set(document["model"])
    assert config_hash(config) == BUNDLED_CONFIG_HASH


OLD_ENCODER = {"num_layers": 0, "num_heads": 8, "ffn_dim": 1024, "dropout": 0.1}

# Fields of options removed in vgtool 0.2: (path under "model", old default, a value that needed the
# option, what the error names).
RETIRED = [
    ("encoder", OLD_ENCODER, {**OLD_ENCODER, "num_layers": 2}, r"model\.encoder\.num_layers is 2"),
    (
        "phrase_encoder",
        OLD_ENCODER,
        {**OLD_ENCODER, "num_layers": 1},
        r"model\.phrase_encoder\.num_layers is 1",
    ),
    ("decoder.proposal_scoring", "film", "dot", r'model\.decoder\.proposal_scoring is "dot"'),
    ("decoder.relation_bias", False, True, r"model\.decoder\.relation_bias is true"),
    ("categories", [], ["a"], r'model\.categories is \["a"\]'),
]
RETIRED_IDS = [path for path, *_ in RETIRED]


def _with_model_field(source, out, path: str, value) -> None:
    """Copy checkpoint ``source`` to ``out`` with ``model.<path>`` set to ``value`` in its config.json."""
    shutil.copytree(source, out)
    document = json.loads((out / "config.json").read_text())
    *parents, key = path.split(".")
    node = document["model"]
    for part in parents:
        node = node[part]
    node[key] = value
    (out / "config.json").write_text(json.dumps(document))


@pytest.mark.parametrize(("path", "default", "_value", "_named"), RETIRED, ids=RETIRED_IDS)
def test_old_checkpoint_with_a_retired_field_at_its_default_loads(
    tiny_checkpoint, tmp_path, path, default, _value, _named
):
    _with_model_field(tiny_checkpoint, tmp_path / "old", path, default)
    assert read_checkpoint_config(tmp_path / "old")[0] == read_checkpoint_config(tiny_checkpoint)[0]


def test_old_encoder_sections_without_layers_load_whatever_their_other_keys(tiny_checkpoint, tmp_path):
    _with_model_field(
        tiny_checkpoint, tmp_path / "a", "encoder", {"num_layers": 0, "num_heads": 2, "ffn_dim": 32}
    )
    _with_model_field(tmp_path / "a", tmp_path / "b", "phrase_encoder", {"dropout": 0.0})
    model = load_checkpoint(tmp_path / "b")
    assert model.config == read_checkpoint_config(tiny_checkpoint)[0]
    with torch.no_grad():
        assert torch.equal(
            model(*_inputs())["pred_boxes"], load_checkpoint(tiny_checkpoint)(*_inputs())["pred_boxes"]
        )


@pytest.mark.parametrize(("path", "_default", "value", "named"), RETIRED, ids=RETIRED_IDS)
def test_old_checkpoint_that_used_a_removed_option_is_refused(
    tiny_checkpoint, tmp_path, path, _default, value, named
):
    _with_model_field(tiny_checkpoint, tmp_path / "old", path, value)
    expected = rf"old/config\.json: {named}, but .* was removed in vgtool 0\.2; this checkpoint needs an older vgtool"
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(tmp_path / "old")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["encoder.num_layers=2", "decoder.relation_bias=true", "categories=[a]"])
def test_removed_options_are_unknown_keys_for_new_models(override):
    with pytest.raises(ConfigError, match="unknown config key"):
        config_from_preset("vlgtr-tiny", [override])
