"""Backend triton against a real Triton Inference Server (pytriton's tritonserver) started on localhost.

The server is ``da3-ros serve`` (da3_ros's ONNX Runtime engine inside Triton); clients are the torch-free
TritonEngine and the node over real Fast DDS. Random weights (untrained), real photos.
"""
import contextlib
import ipaddress
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from google.protobuf import text_format
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo
from tritonclient.grpc import model_config_pb2

from conftest import EXAMPLES, module_dir
from da3_ros.ros import conversions as conv
from da3_ros.engines import EngineUnavailable, FrameBatch, create_engine
from da3_ros.engines.onnx_source import read_metadata
from da3_ros.ros.diagnostics import NodeStats
from da3_ros.engines.triton_engine import ServerModel, TritonModelError, TritonSettings
from da3_ros.core.sync import SyncStats
from da3_ros.msg import MultiViewDepth
from ros_harness import process, ros_env, write_params

MODEL = "random:da3-small@0"
STEREO = {"camera_names": ["left", "right"], "rate_hz": 2.0,
          "sources": [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]}
HW = (280, 504)  # network size of the 1208x680 photos
SIZE = ["--height", str(HW[0]), "--width", str(HW[1])]
RIG = ["--views", "2", *SIZE]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Served:
    """A running ``da3-ros serve``: its gRPC address, process and ports."""

    url: str
    proc: subprocess.Popen
    ports: tuple[int, int, int]  # gRPC, HTTP, metrics

    def metrics(self) -> dict[str, float]:
        """Triton's Prometheus metrics of model da3 (server side): pending requests, executions."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.ports[2]}/metrics", timeout=10).read().decode()
        return {m[1]: float(m[2]) for m in re.finditer(r'^(nv_inference_\w+)\{model="da3",version="1"\} (\S+)$',
                                                        text, re.MULTILINE)}


@contextlib.contextmanager
def triton_server(cache: Path, log: Path, model: str = MODEL, rig: list[str] | None = None, port: int | None = None,
                  extra: list[str] = (), env: dict | None = None):
    """``da3-ros serve`` in its own process (``rig``: its shape options, default 2 views); yields a Served."""
    grpc_port = port or _free_ports(1)[0]
    http_port, metrics_port = _free_ports(2)
    cmd = [sys.executable, "-m", "da3_ros.offline.cli", "serve", "--model", model, "--cache-dir", str(cache),
           "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
           *(RIG if rig is None else rig), *extra]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        _wait_for(lambda: "ready: model" in log.read_text() or proc.poll() is not None, 240, "the server")
        assert proc.poll() is None, f"da3-ros serve died:\n{log.read_text()[-2000:]}"
        yield Served(f"localhost:{grpc_port}", proc, (grpc_port, http_port, metrics_port))
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
def cache(request, tmp_path_factory) -> Iterator[Path]:
    yield from module_dir(request, tmp_path_factory, "triton_cache")


@pytest.fixture(scope="module")
def served(cache, tmp_path_factory):
    """One server for the module: 2 views, and 1 view (a silent camera) at the same size."""
    with triton_server(cache, tmp_path_factory.mktemp("serve") / "serve.log", extra=["--also-views", "1"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(served) -> str:
    return served.url


@pytest.fixture(scope="module")
def forward_s(server, soh_images) -> float:
    """One warm round trip of a 2-view set through the server (seconds): the time unit of this module's bounds."""
    engine = create_engine("triton", MODEL, triton=TritonSettings(url=server, timeout_s=600.0))
    engine.infer(FrameBatch(soh_images))
    t0 = time.monotonic()
    engine.infer(FrameBatch(soh_images))
    return time.monotonic() - t0


def _patient(url: str, forward_s: float, **kwargs) -> TritonSettings:
    """Settings whose deadline no healthy forward of this run misses (10 forwards + 1 s)."""
    return TritonSettings(url=url, timeout_s=10 * forward_s + 1.0, **kwargs)


def test_remote_results_equal_the_local_backend(server, cache, soh_images, forward_s):
    """Same weights, same set: the server's answer post-processed on the client = the local ONNX Runtime run.

    K without poses is not a pose-conditioned request (item 22): only the image tensor goes out.
    """
    remote = create_engine("triton", MODEL, triton=_patient(server, forward_s))
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


def test_wrong_model_name_shape_and_kind_are_named(server, cache, soh_images, tmp_path, forward_s):
    with pytest.raises(TritonModelError, match="has no model 'nope'"):
        create_engine("triton", MODEL, triton=_patient(server, forward_s, model_name="nope"))
    with pytest.raises(TritonModelError, match=r"da3mono-large needs input 'images' and outputs \['depth', 'sky'\]"):
        create_engine("triton", "random:da3mono-large", triton=_patient(server, forward_s))
    # A server with one fixed-shape graph (2 views) and a rig of 3 cameras: both shapes in the message.
    graph = next(p for p in cache.glob("onnx-*.onnx")
                 if (lambda m: m["n_views"] == 2 and not m["conditioned"])(read_metadata(p)))
    with triton_server(cache, tmp_path / "fixed.log", model=str(graph), rig=[]) as srv:
        engine = create_engine("triton", MODEL, triton=_patient(srv.url, forward_s))
        with pytest.raises(TritonModelError, match=r"shape \[1, 2, 3, 280, 504\], this rig sends \[1, 3, 3, 280, "):
            engine.infer(FrameBatch(soh_images + soh_images[:1]))


def test_a_slow_server_is_a_counted_timeout(server, soh_images):
    engine = create_engine("triton", MODEL, triton=TritonSettings(url=server, timeout_s=0.01))
    with pytest.raises(EngineUnavailable, match="no answer within 0.01 s"):
        engine.infer(FrameBatch(soh_images))
    assert engine.health()[1]["triton.timeouts"] == "1"


def test_a_deadline_the_server_ends_first_is_the_same_counted_timeout(server):
    """The request carries its deadline to the server (timeout_s), which may end it before the client stops waiting.

    Its DEADLINE_EXCEEDED answer is the same timeout as the client's: counted, and said with triton.timeout_s (a CI
    run got "gave no answer in time: Stream removed (Deadline Exceeded)", naming no setting).
    """
    from tritonclient.utils import InferenceServerException

    engine = create_engine("triton", MODEL, triton=TritonSettings(url=server, timeout_s=0.01))
    answer = InferenceServerException("Stream removed (Deadline Exceeded)", status="StatusCode.DEADLINE_EXCEEDED")
    with pytest.raises(EngineUnavailable, match=r"no answer within 0.01 s \(triton.timeout_s\): Stream removed"):
        engine._raise_for(answer)
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


def test_server_down_at_start_then_up(cache, soh_images, tmp_path, forward_s):
    """No server: the engine starts, drops sets at once (no waiting) and connects when one comes up."""
    port = _free_ports(1)[0]
    engine = create_engine("triton", MODEL, triton=_patient(f"localhost:{port}", forward_s))
    assert not engine.health()[0]
    t0 = time.monotonic()
    with pytest.raises(EngineUnavailable, match="unreachable"):
        engine.infer(FrameBatch(soh_images))
    assert time.monotonic() - t0 < forward_s  # dropped without waiting on anything
    with triton_server(cache, tmp_path / "late.log", port=port):
        _wait_for(lambda: _try(engine, soh_images), 30, "the engine to reconnect")
    assert engine.health()[0] and engine.health()[1]["triton.reconnects"] == "0"  # a first connection


def _try(engine, images) -> bool:
    try:
        engine.infer(FrameBatch(images))
        return True
    except EngineUnavailable:
        return False


def test_node_on_triton_publishes_the_local_result_and_survives_a_server_loss(tmp_path, domain_id, checker, cache,
                                                                                forward_s):
    """Node on backend triton over DDS: the published depth = the local engine on the same set.

    The server killed mid-run -> sets dropped and counted, node alive; a new server on the same port -> results.
    """
    port = _free_ports(1)[0]
    with triton_server(cache, tmp_path / "serve1.log", port=port) as srv:
        url, proc = srv.url, srv.proc
        node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {
            "model": MODEL, "backend": "triton", "triton.url": url, "triton.timeout_s": 10 * forward_s + 1.0,
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
    out = subprocess.run([sys.executable, "-m", "da3_ros.offline.cli", "export", "--model", MODEL, "--views", "2",
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


def _send(engine, images) -> bool:
    """One set through the engine as the node's worker sends it: True on a result, False on a counted drop."""
    try:
        engine.infer(FrameBatch(images))
        return True
    except EngineUnavailable:
        return False


def _settled_metrics(served, forward_s: float) -> dict[str, float]:
    """Triton's metrics once its execution count has stopped changing (it may trail the last answer)."""
    last = served.metrics()
    deadline = time.monotonic() + 20 * forward_s + 5.0
    while time.monotonic() < deadline:
        time.sleep(max(2.5, forward_s / 2))  # longer than Triton's 2 s metrics interval; not a wait for a result
        now = served.metrics()
        if now.get("nv_inference_exec_count") == last.get("nv_inference_exec_count"):
            return now
        last = now
    return last


def test_abandoned_requests_do_not_pile_up_on_the_server(served, soh_images, forward_s):
    """Items 19, 20: a stalled model, and a rig that keeps sending: nothing piles up on the server.

    Serve's process, where the forward runs, is stopped (tritonserver keeps taking requests) while the rig
    sends a set every half forward with ``timeout_s`` = 3 forwards.

    On the server (Triton's own metrics) at most one of the rig's requests is queued or running, and at most one
    abandoned request is executed; the engine says WARN with the reason; after the stall the first result comes
    within 3 forwards + 1 s.
    """
    engine = create_engine("triton", MODEL, triton=TritonSettings(url=served.url, timeout_s=3 * forward_s))
    assert _send(engine, soh_images)  # connected and warm
    before = _settled_metrics(served, forward_s)
    max_pending, stop_polling, tick = [0.0], threading.Event(), threading.Event()

    def poll() -> None:
        while not stop_polling.wait(0.02):
            max_pending[0] = max(max_pending[0], served.metrics()["nv_inference_pending_request_count"])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    successes = 0
    os.kill(served.proc.pid, signal.SIGSTOP)
    try:
        stall_end = time.monotonic() + 2.5 * engine.settings.timeout_s
        while time.monotonic() < stall_end:
            successes += _send(engine, soh_images)
            tick.wait(forward_s / 2)  # the rig's next set
        ok, values = engine.health()
        stats = NodeStats(["left", "right"], "triton")
        status = stats.diagnostics("da3_depth", SyncStats(frames_in=[0, 0]), (ok, values)).status[0]
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    while not _send(engine, soh_images) and time.monotonic() - resumed < 60 * forward_s:
        tick.wait(forward_s / 2)
    recovered_s = time.monotonic() - resumed
    successes += 1
    stop_polling.set()
    poller.join()
    executed = _settled_metrics(served, forward_s)["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    timeouts = int(engine.health()[1]["triton.timeouts"])

    assert successes == 1 and int(values["triton.timeouts"]) >= 1
    assert not ok and "slower than triton.timeout_s" in values["triton.state"], values
    assert status.level == DiagnosticStatus.WARN and "slower than triton.timeout_s" in status.message, status.message
    assert max_pending[0] <= 1, f"{max_pending[0]:.0f} of the rig's requests waited on the server"
    # Each abandoned request is one the rig gave up on, sent one at a time (no queue of them, no retries); before
    # the fix a stall of this length left 14 executed of 17 sent. A loaded machine may abandon one more (the
    # stuck request cancelled after 4 timeouts), never a pile.
    stall_timeouts = math.ceil(2.5) + 1
    assert executed - successes <= timeouts <= stall_timeouts, (
        f"the server executed {executed - successes:.0f} abandoned requests; the rig abandoned {timeouts}")
    assert recovered_s <= 3 * forward_s + 1.0, f"first result {recovered_s:.1f} s after the stall ({forward_s:.2f} s)"
    assert engine.health()[0] and engine.health()[1]["triton.state"] == "connected"


def test_a_shape_the_server_was_not_started_with_is_refused_at_once(served, cache, soh_images, forward_s):
    """Item 22: serve answers only the shapes it prepared at start; others get a clear error at once.

    Never an export inside the rig's request (which took 10-21 s). Poses are sent only when the set carries them.
    """
    graphs = sorted(cache.iterdir())
    engine = create_engine("triton", MODEL, triton=_patient(served.url, forward_s))
    assert engine.infer(FrameBatch(soh_images[:1])).depth.shape[0] == 1  # served: started with --also-views 1
    K = np.tile(np.array([[900.0, 0, 604], [0, 900.0, 340], [0, 0, 1]]), (2, 1, 1))
    T = np.tile(np.eye(4), (2, 1, 1))
    T[1, 0, 3] = -0.5
    t0 = time.monotonic()
    with pytest.raises(TritonModelError, match=r"pose conditioning.*--conditioned"):
        engine.infer(FrameBatch(soh_images, K_cam=K, T_cam_world=T))
    with pytest.raises(TritonModelError, match=r"--views 3 --height 280 --width 504"):
        engine.infer(FrameBatch(soh_images + soh_images[:1]))
    # The server itself refuses what its config lets through (view count -1: it serves 2 and 1): a client
    # that does not check, tritonclient straight to the server.
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    images = grpcclient.InferInput("images", [1, 3, 3, *HW], "FP32")
    images.set_data_from_numpy(np.zeros((1, 3, 3, *HW), np.float32))
    with pytest.raises(InferenceServerException, match=r"--views 3 --height 280 --width 504"):
        grpcclient.InferenceServerClient(served.url).infer("da3", [images], client_timeout=10 * forward_s + 1.0)
    assert time.monotonic() - t0 < forward_s  # refused, not exported (an export takes many forwards)
    assert sorted(cache.iterdir()) == graphs


def test_a_conditioned_rig_and_its_lone_camera_are_served_by_one_server(cache, tmp_path, soh_images):
    """Issue 23.16: ``serve --conditioned --also-views 1`` serves a conditioned rig through a silent camera.

    It answers the rig's conditioned 2-view sets AND the plain 1-view sets left while one camera is silent (a
    single camera is never pose-conditioned).
    Before, ``--conditioned`` made the 1-view graph conditioned too: every 1-view set was refused for the whole
    silence. A set the server does not serve is said in health() (WARN naming its shape) until an answer.
    Tiny network size (56x28) to keep it cheap.
    """
    import tritonclient.grpc as grpcclient

    hw = (28, 56)
    rig = ["--views", "2", "--height", str(hw[0]), "--width", str(hw[1]), "--conditioned"]
    K = np.tile(np.array([[900.0, 0, 604], [0, 900.0, 340], [0, 0, 1]]), (2, 1, 1))
    T = np.tile(np.eye(4), (2, 1, 1))
    T[1, 0, 3] = -0.5
    with triton_server(cache, tmp_path / "cond.log", rig=rig, extra=["--also-views", "1"]) as srv:
        remote = create_engine("triton", MODEL, triton=TritonSettings(url=srv.url, timeout_s=60.0), process_res=56)
        local = create_engine("onnxruntime", MODEL, cache_dir=str(cache), process_res=56)
        for batch in (FrameBatch(soh_images, K_cam=K, T_cam_world=T), FrameBatch(soh_images[:1], K_cam=K[:1])):
            a, b = remote.infer(batch), local.infer(batch)  # the conditioned rig set, then the lone camera
            assert a.depth.shape == (len(batch.images_rgb), *hw)
            np.testing.assert_allclose(a.depth, b.depth, rtol=1e-6)
        assert remote.health()[0] and remote.health()[1]["triton.refused"] == "0"
        config = grpcclient.InferenceServerClient(srv.url).get_model_config("da3", as_json=True)["config"]
        inputs = {i["name"]: (i["dims"], i.get("optional", False)) for i in config["input"]}
        assert inputs["extrinsics"] == (["1", "-1", "4", "4"], True)  # plain 1-view requests leave them out
        assert "2 view(s) at 56x28, pose-conditioned; 1 view(s) at 56x28, plain" in (tmp_path / "cond.log").read_text()

        # a shape it does not serve: refused with options that can be followed, and /diagnostics says so
        with pytest.raises(TritonModelError, match=r"--views 3 --height 28 --width 56 --conditioned"):
            remote.infer(FrameBatch(soh_images + soh_images[:1], K_cam=np.concatenate([K, K[:1]]),
                                    T_cam_world=np.concatenate([T, T[:1]])))
        ok, values = remote.health()
        assert not ok and values["triton.refused"] == "1"
        assert "refuses the 3 view(s) at 56x28, pose-conditioned sets" in values["triton.state"], values
        status = NodeStats(["a", "b", "c"], "triton").diagnostics(
            "da3_depth", SyncStats(frames_in=[0, 0, 0]), (ok, values), ["c"]).status[0]
        assert status.level == DiagnosticStatus.WARN and "sets go on" not in status.message
        assert "refuses the 3 view(s) at 56x28, pose-conditioned" in status.message, status.message
        remote.infer(FrameBatch(soh_images[:1]))  # an answer: OK again
        assert remote.health()[0] and remote.health()[1]["triton.state"] == "connected"


def test_the_advice_for_a_lone_camera_can_be_followed():
    """Issue 23.16: the advice for a plain 1-view set is ``--also-views 1`` beside the rig's ``--conditioned``.

    Against a server of conditioned 2-view sets only: not a ``--views 1`` server of its own (which one server of
    the rig could not be).
    """
    from da3_ros.export.triton_serve import rig_shapes

    server = ServerModel("da3", {"images": ([1, 2, 3, 28, 56], False), "extrinsics": ([1, 2, 4, 4], False),
                                 "intrinsics": ([1, 2, 3, 3], False)}, ["depth"])
    with pytest.raises(TritonModelError) as err:
        server.check({"images": np.zeros((1, 1, 3, 28, 56), np.float32)})
    assert "--views 2 --height 28 --width 56 --conditioned --also-views 1" in str(err.value), err.value
    assert "`--views 1" not in str(err.value)
    assert rig_shapes([2, 1], (28, 56), True) == [(2, (28, 56), True), (1, (28, 56), False)]
    assert rig_shapes([3, 2], (28, 56), True) == [(3, (28, 56), True), (2, (28, 56), True)]


def _listening(ports) -> dict[int, set[str]]:
    """Addresses listening on ``ports`` (TCP, IPv4 and IPv6; v4-mapped as IPv4), from /proc/net/tcp{,6}."""
    out: dict[int, set[str]] = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            ip_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) not in ports:  # 0A: LISTEN
                continue
            raw = b"".join(bytes.fromhex(ip_hex[i:i + 8])[::-1] for i in range(0, len(ip_hex), 8))
            ip = ipaddress.ip_address(socket.inet_ntop(family, raw))
            ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 (gRPC's socket) is IPv4 loopback
            out.setdefault(int(port_hex, 16), set()).add(str(ip))
    return out


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_serve_listens_on_loopback_and_stops_cleanly_on_sigterm(served, cache, tmp_path):
    """Item 21 (and item 16's ``serve --height H --width W`` TypeError: no --views here, 1 view).

    gRPC, HTTP and metrics listen on 127.0.0.1 only; SIGTERM by PID: exit 0, no process of it left, no
    pytriton workspace left.
    """
    # pytriton's sockets live in its workspace: keep the path short (a unix socket path has at most 107 bytes)
    home = Path(tempfile.mkdtemp(prefix="da3-pyt-"))
    env = {**os.environ, "PYTRITON_HOME": str(home)}
    try:
        with triton_server(cache, tmp_path / "term.log", rig=SIZE, env=env) as srv:
            assert _listening(srv.ports) == {p: {"127.0.0.1"} for p in srv.ports}
            children = _descendants(srv.proc.pid)
            assert children and list(home.iterdir())  # tritonserver and its workspace while serving
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(timeout=60) == 0, (tmp_path / "term.log").read_text()[-2000:]
            assert [p for p in children if _running(p)] == []
            assert list(home.iterdir()) == []
        assert "Traceback" not in (tmp_path / "term.log").read_text()
    finally:
        shutil.rmtree(home, ignore_errors=True)
