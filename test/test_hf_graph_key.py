"""A Hugging Face model id keys its graphs by the resolved weights, the same before and after the download (23.14).

On a fresh machine the weights fingerprint was ``spec:<id>`` before the download and the cached file's
path/size/mtime after it, so the graph exported on the first start was exported again on the next. No network
here: the Hub is ``hf_hub_standin.HubStandin`` (local HTTP, ``HF_ENDPOINT``), the cache an empty tmp folder, and
for the offline case a pre-populated Hugging Face cache with ``HF_HUB_OFFLINE=1``.
"""
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import save_model

from da3_ros.models.loading import build_network
from hf_hub_standin import HubStandin

REPO_ID = "depth-anything/DA3-SMALL"  # the id a user gives (model: da3-small means it too)


def _checkpoint(directory):
    """A da3-small checkpoint in upstream's layout (seeded random weights, keys model.<param>)."""
    directory.mkdir(parents=True)
    holder = torch.nn.Module()
    holder.model = build_network("da3-small", seed=5)
    save_model(holder, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    return {name: directory / name for name in ("config.json", "model.safetensors")}


def _hf_env(tmp_path, **extra):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
               HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_OFFLINE", None)
    env.update(extra)
    return env


def _build_engine(env, cache):
    return subprocess.run(["da3-ros", "build-engine", "--backend", "onnxruntime", "--model", REPO_ID, "--views", "1",
                           "--height", "56", "--width", "56", "--cache-dir", str(cache)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(env["HF_HOME"]))


def _graphs(cache):
    return {p: p.stat().st_mtime_ns for p in cache.rglob("onnx-*.onnx")}  # exported graphs (not ORT's optimised)


def test_a_hub_model_s_graph_is_exported_once_on_a_fresh_machine(tmp_path):
    """Two engine creations from an empty Hugging Face cache: one download, one export, the same graph key."""
    files = _checkpoint(tmp_path / "upload")
    cache = tmp_path / "graphs"
    with HubStandin(REPO_ID, files) as hub:
        env = _hf_env(tmp_path, HF_ENDPOINT=hub.url)
        first = _build_engine(env, cache)
        assert first.returncode == 0, first.stderr[-3000:]
        after_first = _graphs(cache)
        second = _build_engine(env, cache)
        assert second.returncode == 0, second.stderr[-3000:]
    assert hub.downloads["model.safetensors"] == 1  # the download really happened here, once
    assert len(after_first) == 1, after_first
    assert _graphs(cache) == after_first  # the second creation found the first graph: no second export
    graph = next(iter(after_first))
    key = json.loads(graph.with_name(graph.name + ".meta.json").read_text())["key"]  # what it was exported for
    assert "models--depth-anything--DA3-SMALL" in key["weights"]  # the downloaded file, not spec:<id>


_FINGERPRINT = """
import logging, sys
logging.basicConfig(level=logging.WARNING)
from da3_ros.engines.onnx_source import weights_fingerprint
print(weights_fingerprint(sys.argv[1]))
print(weights_fingerprint(sys.argv[1]))
"""


def test_the_fingerprint_is_the_resolved_file_offline_and_the_name_only_when_unresolvable(tmp_path):
    """Pre-populated cache, offline: the snapshot's weights file (twice the same); a repo not cached: spec, said."""
    files = _checkpoint(tmp_path / "upload")
    with HubStandin(REPO_ID, files) as hub:  # populate the cache as a download would
        fetch = "from da3_ros.models.loading import download; download(%r)" % REPO_ID
        out = subprocess.run([sys.executable, "-c", fetch], env=_hf_env(tmp_path, HF_ENDPOINT=hub.url),
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    offline = _hf_env(tmp_path, HF_HUB_OFFLINE="1")
    for spec in (REPO_ID, "da3-small"):  # an id, and a variant name meaning its repository
        out = subprocess.run([sys.executable, "-c", _FINGERPRINT, spec], env=offline, capture_output=True,
                             text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        first, second = out.stdout.split()
        assert first == second
        path, size, _mtime = first.rsplit(":", 2)
        assert "models--depth-anything--DA3-SMALL" in path and int(size) == files["model.safetensors"].stat().st_size
    out = subprocess.run([sys.executable, "-c", _FINGERPRINT, "nobody/not-cached"], env=offline, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["spec:nobody/not-cached"] * 2
    assert out.stderr.count("cannot resolve the weights of nobody/not-cached") == 1  # said once
    assert "exported again" in out.stderr
