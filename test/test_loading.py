"""Checkpoint loading: upstream layout, strict keys, safetensors only, offline."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from da3_ros.models import CheckpointError, load_model
from da3_ros.models.loading import build_network


def _write_checkpoint(directory, net, variant="da3-small"):
    directory.mkdir(parents=True, exist_ok=True)
    holder = torch.nn.Module()
    holder.model = net  # upstream keys: model.<param>
    save_model(holder, str(directory / "model.safetensors"))  # dedups the shared head LayerNorms
    (directory / "config.json").write_text(json.dumps({"model_name": variant}))
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    net = build_network("da3-small", seed=11)
    return _write_checkpoint(tmp_path_factory.mktemp("ckpt") / "da3-small", net), net


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_directory_loads_strictly(checkpoint):
    directory, net = checkpoint
    m = load_model(str(directory))
    assert m.trained and m.variant.name == "da3-small"
    assert _same_weights(m.net, net)
    assert not _same_weights(build_network("da3-small", seed=0), net)  # the comparison can fail


def test_local_directory_loads_offline(checkpoint):
    directory, net = checkpoint
    code = ("import sys, torch; from da3_ros.models import load_model; m = load_model(sys.argv[1]); "
            "print(float(sum(p.double().sum() for p in m.net.parameters())))")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code, str(directory)], env=env, capture_output=True, text=True,
                         timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr
    expected = float(sum(p.double().sum() for p in net.parameters()))
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-12)


def test_hub_id_offline_without_cache_is_a_clear_error(tmp_path):
    code = "from da3_ros.models import load_model; load_model('depth-anything/DA3-SMALL')"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd="/")
    assert out.returncode != 0
    assert "CheckpointError" in out.stderr and "HF_HUB_OFFLINE" in out.stderr


def test_wrong_keys_are_named(checkpoint, tmp_path):
    directory, _ = checkpoint
    tensors = load_file(str(directory / "model.safetensors"))
    tensors["model.backbone.renamed_weight"] = tensors.pop("model.cam_dec.fc_t.weight") if (
        "model.cam_dec.fc_t.weight" in tensors) else tensors.pop(sorted(tensors)[0])
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(tensors, str(bad / "model.safetensors"))
    (bad / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    with pytest.raises(CheckpointError, match=r"1 missing keys .*1 unexpected keys \[model\.backbone\.renamed_weight"):
        load_model(str(bad))


def test_wrong_shapes_are_rejected(checkpoint, tmp_path):
    directory, _ = checkpoint
    tensors = load_file(str(directory / "model.safetensors"))
    key = sorted(k for k in tensors if k.endswith(".weight"))[0]
    tensors[key] = torch.zeros(3, 3)
    bad = tmp_path / "shape"
    bad.mkdir()
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(str(bad), variant="da3-small")


def test_truncated_file_is_rejected(checkpoint, tmp_path):
    directory, _ = checkpoint
    data = (directory / "model.safetensors").read_bytes()
    bad = tmp_path / "trunc"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(str(bad))


def test_pickle_is_never_loaded(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(str(tmp_path))


def test_missing_config_needs_an_explicit_variant(checkpoint, tmp_path):
    directory, net = checkpoint
    (tmp_path / "model.safetensors").symlink_to(directory / "model.safetensors")
    with pytest.raises(CheckpointError, match="variant"):
        load_model(str(tmp_path))
    assert _same_weights(load_model(str(tmp_path), variant="da3-small").net, net)


def test_random_weights_are_seeded_and_labelled():
    a, b = load_model("random:da3-small@5"), load_model("random:da3-small@5")
    assert _same_weights(a.net, b.net) and not a.trained and "UNTRAINED" in a.label
    assert not _same_weights(a.net, load_model("random:da3-small@6").net)
    with pytest.raises(ValueError, match="known: da3-small"):
        load_model("random:da3-tiny")
