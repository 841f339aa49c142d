"""Backend triton against a real Triton Inference Server (pytriton's tritonserver) started on localhost.

The server is ``da3-ros serve`` (da3_ros's ONNX Runtime engine inside Triton); clients are the torch-free
TritonEngine and the node over real Fast DDS. Random weights (untrained), real photos.
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from google.protobuf import text_format
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo
from tritonclient.grpc import model_config_pb2

from conftest import EXAMPLES
from da3_ros import conversions as conv
from da3_ros.engines import EngineUnavailable, FrameBatch, create_engine
from da3_ros.engines.onnx_source import read_metadata
from da3_ros.engines.triton_engine import ServerModel, TritonModelError, TritonSettings
from da3_ros.msg import MultiViewDepth
from ros_harness import process, ros_env, write_params

MODEL = "random:da3-small@0"
STEREO = {"camera_names": ["left", "right"], "rate_hz": 2.0,
          "sources": [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]}
HW = (280, 504)  # network size of the 1208x680 photos


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.contextmanager
def triton_server(cache: Path, log: Path, model: str = MODEL, views: int = 2, port: int | None = None):
    """``da3-ros serve`` in its own process; yields its gRPC address once the model answers."""
    grpc_port = port or _free_ports(1)[0]
    http_port, metrics_port = _free_ports(2)
    cmd = [sys.executable, "-m", "da3_ros.cli", "serve", "--model", model, "--cache-dir", str(cache),
           "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
           "--views", str(views), "--height", str(HW[0]), "--width", str(HW[1])]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: "ready: model" in log.read_text() or proc.poll() is not None, 240, "the server")
        assert proc.poll() is None, f"da3-ros serve died:\n{log.read_text()[-2000:]}"
        yield f"localhost:{grpc_port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # pytriton stops its tritonserver
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its process group
        proc.wait()


def _wait_for(condition, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("triton_cache")


@pytest.fixture(scope="module")
def server(cache, tmp_path_factory):
    with triton_server(cache, tmp_path_factory.mktemp("serve") / "serve.log") as (url, _):
        yield url


def test_remote_results_equal_the_local_backend(server, cache, soh_images):
    """Same weights, same set: the server's answer post-processed on the client = the local ONNX Runtime run."""
    remote = create_engine("triton", MODEL, triton=TritonSettings(url=server))
    local = create_engine("onnxruntime", MODEL, cache_dir=str(cache))
    K = np.tile(np.array([[900.0, 0, 604], [0, 900.0, 340], [0, 0, 1]]), (2, 1, 1))
    for batch in (FrameBatch(soh_images), FrameBatch(soh_images, K_cam=K)):
        a, b = remote.infer(batch), local.infer(batch)
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-6)
        np.testing.assert_allclose(a.confidence, b.confidence, rtol=1e-6)
        np.testing.assert_allclose(a.T_cam_world, b.T_cam_world, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a.K_proc, b.K_proc, rtol=1e-6)
    ok, values = remote.health()
    assert ok and values["triton.state"] == "connected"
    assert int(values["triton.request_bytes"]) == 2 * 3 * HW[0] * HW[1] * 4  # the input tensor, nothing else


def test_wrong_model_name_shape_and_kind_are_named(server, cache, soh_images, tmp_path):
    with pytest.raises(TritonModelError, match="has no model 'nope'"):
        create_engine("triton", MODEL, triton=TritonSettings(url=server, model_name="nope"))
    with pytest.raises(TritonModelError, match=r"da3mono-large needs input 'images' and outputs \['depth', 'sky'\]"):
        create_engine("triton", "random:da3mono-large", triton=TritonSettings(url=server))
    # A server with one fixed-shape graph (2 views) and a rig of 3 cameras: both shapes in the message.
    graph = next(p for p in cache.glob("onnx-*.onnx")
                 if (lambda m: m["n_views"] == 2 and not m["conditioned"])(read_metadata(p)))
    with triton_server(cache, tmp_path / "fixed.log", model=str(graph)) as (url, _):
        engine = create_engine("triton", MODEL, triton=TritonSettings(url=url))
        with pytest.raises(TritonModelError, match=r"shape \[1, 2, 3, 280, 504\], this rig sends \[1, 3, 3, 280, "):
            engine.infer(FrameBatch(soh_images + soh_images[:1]))


def test_a_slow_server_is_a_counted_timeout(server, soh_images):
    engine = create_engine("triton", MODEL, triton=TritonSettings(url=server, timeout_s=0.01))
    with pytest.raises(EngineUnavailable, match="no answer within 0.01 s"):
        engine.infer(FrameBatch(soh_images))
    assert engine.health()[1]["triton.timeouts"] == "1"


def test_settings_are_validated():
    assert TritonSettings.parse_headers("Authorization: Bearer abc; X-Robot: r2") == {
        "authorization": "Bearer abc", "x-robot": "r2"}
    with pytest.raises(ValueError, match="Name: value"):
        TritonSettings.parse_headers("Authorization Bearer")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        TritonSettings(timeout_s=0)
    with pytest.raises(ValueError, match="host:port"):
        TritonSettings(url="http://localhost:8001/v2")
    with pytest.raises(FileNotFoundError, match="root_certificates"):
        TritonSettings(ssl=True, root_certificates="/nonexistent/ca.pem")
    server = ServerModel("m", {"images": ([1, 2, 3, -1, -1], False), "extrinsics": ([1, 2, 4, 4], True)}, ["depth"])
    server.check({"images": np.zeros((1, 2, 3, 28, 42), np.float32)})  # any size, optional input left out
    with pytest.raises(TritonModelError, match="no input 'intrinsics'"):
        server.check({"images": np.zeros((1, 2, 3, 28, 42), np.float32),
                      "intrinsics": np.zeros((1, 2, 3, 3), np.float32)})


def test_server_down_at_start_then_up(cache, soh_images, tmp_path):
    """No server: the engine starts, drops sets at once (no waiting) and connects when one comes up."""
    port = _free_ports(1)[0]
    engine = create_engine("triton", MODEL, triton=TritonSettings(url=f"localhost:{port}"))
    assert not engine.health()[0]
    t0 = time.monotonic()
    with pytest.raises(EngineUnavailable, match="unreachable"):
        engine.infer(FrameBatch(soh_images))
    assert time.monotonic() - t0 < 1.0
    with triton_server(cache, tmp_path / "late.log", port=port):
        _wait_for(lambda: _try(engine, soh_images), 30, "the engine to reconnect")
    assert engine.health()[0] and engine.health()[1]["triton.reconnects"] == "0"  # a first connection


def _try(engine, images) -> bool:
    try:
        engine.infer(FrameBatch(images))
        return True
    except EngineUnavailable:
        return False


def test_node_on_triton_publishes_the_local_result_and_survives_a_server_loss(tmp_path, domain_id, checker, cache):
    """Node on backend triton over DDS: the published depth = the local engine on the same set.

    The server killed mid-run -> sets dropped and counted, node alive; a new server on the same port -> results.
    """
    port = _free_ports(1)[0]
    with triton_server(cache, tmp_path / "serve1.log", port=port) as (url, proc):
        node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {
            "model": MODEL, "backend": "triton", "triton.url": url, "triton.timeout_s": 30.0,
            "camera_names": ["left", "right"], "diagnostics_period_s": 0.5})
        player_yaml = write_params(tmp_path / "player.yaml", "rig_player", STEREO)
        mv = checker.collect(MultiViewDepth, "multiview_depth")
        infos = {c: checker.collect(CameraInfo, f"{c}/camera_info", qos_profile_sensor_data)
                 for c in ("left", "right")}
        diags = checker.collect(DiagnosticArray, "/diagnostics")
        with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
                process("rig_player", player_yaml, domain_id, tmp_path / "player.log") as player:
            checker.spin_until(lambda: len(mv) >= 1 and all(infos.values()), 120, "a result over triton")
            # the node's result = the local engine on the same images and camera_info
            local = create_engine("onnxruntime", MODEL, cache_dir=str(cache))
            from conftest import read_rgb
            images = [read_rgb(EXAMPLES / n) for n in ("SOH_000.png", "SOH_010.png")]
            K = np.stack([conv.camera_info_to_K(infos[c][-1])[0] for c in ("left", "right")])
            pred = local.infer(FrameBatch(images, K_cam=K))
            for i, view in enumerate(mv[-1].views):
                np.testing.assert_allclose(conv.image_to_array(view.depth), pred.depth[i], rtol=1e-6)
                np.testing.assert_allclose(conv.image_to_array(view.confidence), pred.confidence[i], rtol=1e-6)

            os.killpg(proc.pid, signal.SIGKILL)  # the server dies mid-run (serve and its tritonserver)
            proc.wait()
            checker.spin_until(lambda: _diag(diags).get("engine_unavailable", 0) >= 2, 60, "counted drops")
            assert _diag(diags, "triton.state") != "connected" and diags[-1].status[0].level == DiagnosticStatus.WARN
            done_while_down = _diag(diags)["sets_done"]
            with triton_server(cache, tmp_path / "serve2.log", port=port):
                checker.spin_until(lambda: _diag(diags).get("sets_done", 0) > done_while_down + 1, 90,
                                   "results after the server came back")
            assert _diag(diags, "triton.reconnects") == "1" and _diag(diags)["errors"] == 0
            assert _diag(diags, "backend") == "triton" and _diag(diags)["torch_loaded"] == 0
            assert player.poll() is None
    assert "Traceback" not in (tmp_path / "node.log").read_text()


def _diag(diags, key: str | None = None):
    values = {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}
    if key is not None:
        return values.get(key)
    out = {}
    for k, v in values.items():
        with contextlib.suppress(ValueError):
            out[k] = float(v)
    return out


def test_exported_repository_is_what_triton_reads(tmp_path, cache):
    """``da3-ros export --triton-repo`` writes what Triton reads.

    Triton's own config schema parses it, its graph is the rig's, and the bundled tritonserver (Python backend
    only) loads the repository up to the missing onnxruntime backend.
    """
    repo = tmp_path / "repo"
    out = subprocess.run([sys.executable, "-m", "da3_ros.cli", "export", "--model", MODEL, "--views", "2",
                          "--height", str(HW[0]), "--width", str(HW[1]), "--triton-repo", str(repo)],
                         capture_output=True, text=True, env=ros_env(0), check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no TensorRT plan model" in out.stdout
    config = text_format.Parse((repo / "da3" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "onnxruntime" and config.max_batch_size == 0
    dims = {t.name: list(t.dims) for t in [*config.input, *config.output]}
    assert dims["images"] == [1, 2, 3, *HW] and dims["depth"] == [1, 2, *HW] and dims["extrinsics_out"] == [1, 2, 3, 4]
    import onnxruntime as ort
    session = ort.InferenceSession(str(repo / "da3" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape for i in session.get_inputs()} == {"images": [1, 2, 3, *HW]}
    assert [o.name for o in session.get_outputs()] == [o.name for o in config.output]

    import pytriton
    dist = Path(pytriton.__file__).parent / "tritonserver"
    grpc_port, http_port, metrics_port = _free_ports(3)
    run = subprocess.run([str(dist / "bin" / "tritonserver"), f"--model-repository={repo}",
                          f"--backend-directory={dist / 'backends'}", f"--grpc-port={grpc_port}",
                          f"--http-port={http_port}", f"--metrics-port={metrics_port}"],
                         capture_output=True, text=True, timeout=120, check=False)
    log = run.stdout + run.stderr
    assert "loading: da3:1" in log
    assert "unable to find backend library for backend 'onnxruntime'" in log, log[-3000:]
