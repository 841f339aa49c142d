"""Triton backend: the network runs on a Triton Inference Server; everything else stays on the robot.

The robot preprocesses (numpy), sends the N-view input tensor (and the pose-conditioning inputs) over gRPC,
gets the graph's raw outputs back and post-processes them exactly as the local backends do. Torch-free, and
no model weights on the robot: ``model`` only names the checkpoint the server runs (its variant decides the
post-processing and the outputs to expect).

Failure behaviour: a server that is down (at start or later) makes ``infer`` raise ``EngineUnavailable`` at
once, without waiting, until the next reconnection attempt (exponential backoff, 0.5 s up to 8 s); a request
that outlives ``timeout_s`` is abandoned the same way. A server that answers but serves no such model, or a
model whose inputs or outputs do not fit this rig, is a configuration error (``TritonModelError``) that names
both sides.

At most one request of this engine is on the server at any time. Triton keeps running a request whose client
gave up (the Python backend and the default scheduler ignore gRPC cancellation), so an abandoned request is not
cancelled but left to finish: until it does, sets are dropped at once instead of being sent, so nothing piles
up behind it and the first set after a stall is answered within about two forwards. A request the server has
not answered after ``ABANDON_AFTER`` x ``timeout_s`` is cancelled (gRPC deadline) and the server treated as
stuck (reconnect with backoff). While requests time out, ``health()`` is not OK and says why.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from da3_ros.engines.base import BackendUnavailable, Engine, EngineUnavailable, graph_outputs
from da3_ros.engines.cache import ArtifactCache
from da3_ros.engines.graph_io import describe_shape, feeds_shape
from da3_ros.engines.onnx_source import OnnxSource
from da3_ros.core.errors import ConfigError

_LOG = logging.getLogger(__name__)
BACKOFF_S = (0.5, 8.0)  # first retry after 0.5 s, doubling up to 8 s
PROBE_TIMEOUT_S = 2.0  # liveness and metadata calls: a black-holed server must not stall the rig for long
ABANDON_AFTER = 4.0  # x timeout_s: a request still unanswered then is cancelled and the server deemed stuck


class TritonModelError(ValueError):
    """The server answers, but the model is missing or does not fit this rig; the message names both sides."""


UNSERVED_MARK = "da3-ros serve was not started for"  # triton_serve's refusal of a shape it did not prepare


class _Request:
    """One request on the server: set by tritonclient's callback (its thread) when the answer or error comes."""

    def __init__(self) -> None:
        self.sent_t = time.monotonic()
        self.done = threading.Event()
        self.result: Any = None
        self.error: Any = None

    def callback(self, result: Any, error: Any) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass(frozen=True)
class TritonSettings:
    """Where the server is and how to talk to it (tritonclient's gRPC client options)."""

    url: str = "localhost:8001"
    model_name: str = "da3"
    model_version: str = ""  # "": the server's policy (latest)
    timeout_s: float = 5.0  # per request, network, queue and inference: the set is dropped after it
    ssl: bool = False
    root_certificates: str = ""  # PEM files, used with ssl
    private_key: str = ""
    certificate_chain: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # sent with every call (e.g. authorization)

    def __post_init__(self) -> None:
        if not self.url or "/" in self.url:
            raise ConfigError(f"triton.url must be host:port of the server's gRPC endpoint, got {self.url!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"triton.timeout_s must be > 0 seconds, got {self.timeout_s}")
        for name in ("root_certificates", "private_key", "certificate_chain"):
            path = getattr(self, name)
            if path and not Path(path).expanduser().is_file():
                raise FileNotFoundError(f"triton.{name}: no such file {path!r}")

    @staticmethod
    def parse_headers(text: str) -> dict[str, str]:
        """``"Name: value; Other: value"`` -> dict (how the node's ``triton.headers`` string is written)."""
        headers = {}
        for item in filter(None, (part.strip() for part in text.split(";"))):
            name, sep, value = item.partition(":")
            if not sep or not name.strip():
                raise ConfigError(f"triton.headers wants 'Name: value; Name2: value2', got {item!r}")
            headers[name.strip().lower()] = value.strip()
        return headers


@dataclass(frozen=True)
class ServerModel:
    """A model as the server describes it: input dims (-1 = any) and whether each is optional; outputs."""

    name: str
    inputs: dict[str, tuple[list[int], bool]]
    outputs: list[str]

    @classmethod
    def from_config(cls, config: dict) -> ServerModel:
        """From ``get_model_config(as_json=True)['config']``; dims get the batch axis when the model batches."""
        batch = [-1] if int(config.get("max_batch_size", 0)) > 0 else []
        inputs = {i["name"]: (batch + [int(d) for d in i.get("dims", [])], bool(i.get("optional", False)))
                  for i in config.get("input", [])}
        return cls(config.get("name", ""), inputs, [o["name"] for o in config.get("output", [])])

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """TritonModelError unless the server's inputs take exactly these feeds."""
        problems = []
        for name, (dims, optional) in self.inputs.items():
            if name not in feeds and not optional:
                problems.append(f"it needs input {name!r} {dims}, which this rig does not send"
                                + (" (pose conditioning)" if name != "images" else ""))
        for name, value in feeds.items():
            if name not in self.inputs:
                problems.append(f"it has no input {name!r} for this rig's {list(value.shape)}"
                                + (" (pose conditioning: serve a conditioned graph, or set pose_conditioning off)"
                                   if name != "images" else ""))
                continue
            dims = self.inputs[name][0]
            if len(dims) != value.ndim or any(d not in (-1, s) for d, s in zip(dims, value.shape)):
                problems.append(f"its input {name!r} has shape {dims}, this rig sends {list(value.shape)}")
        if problems:
            raise TritonModelError(f"the server's model {self.name!r} does not fit this rig: " + "; ".join(problems)
                                   + f". {serve_hint(feeds)}")


def set_shape(feeds: dict[str, np.ndarray]) -> str:
    """``feeds``' rig shape in words (``graph_io.describe_shape``)."""
    return describe_shape(feeds_shape(feeds))


def serve_hint(feeds: dict[str, np.ndarray]) -> str:
    """What to run on the server for the rig shape of ``feeds`` (views, network size, pose conditioning).

    One ``da3-ros serve`` serves every count the rig sends: the rig's own with ``--views`` (conditioned with
    ``--conditioned``) and those left while a camera is silent with ``--also-views``; 1 view is always plain.
    """
    n, (h, w), _ = feeds_shape(feeds)
    size = f"--height {h} --width {w}"
    if n == 1:  # a lone camera, e.g. a 2-camera rig with one silent: never pose-conditioned (Rig.takes_conditioning)
        return (f"This set is {set_shape(feeds)} (a single camera is never pose-conditioned; e.g. a 2-camera rig "
                f"with one camera silent): start `da3-ros serve` with the rig's options plus `--also-views 1`, "
                f"e.g. `--views 2 {size} --conditioned --also-views 1` (1 view is served plain)")
    shape = f"--views {n} {size}" + (" --conditioned" if "extrinsics" in feeds else "")
    return (f"This set is {set_shape(feeds)}: start `da3-ros serve` with `{shape}` (or give it as `--also-views "
            f"{n}` beside the rig's own `--views`, one server serves every count), or export the model for it "
            f"(`da3-ros export --triton-repo DIR {shape}`)")


def triton_settings(param: Callable[[str], Any]) -> TritonSettings:
    """TritonSettings from the node's ``triton.*`` parameters (``param(name)`` -> value)."""
    return TritonSettings(
        url=param("triton.url"), model_name=param("triton.model"), model_version=param("triton.model_version"),
        timeout_s=float(param("triton.timeout_s")), ssl=bool(param("triton.ssl")),
        root_certificates=param("triton.root_certificates"), private_key=param("triton.private_key"),
        certificate_chain=param("triton.certificate_chain"),
        headers=TritonSettings.parse_headers(param("triton.headers")))


def import_tritonclient() -> Any:
    """tritonclient.grpc, or BackendUnavailable naming what to install."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise BackendUnavailable("backend triton needs the Triton client: `pip install tritonclient[grpc]`") from exc
    return grpcclient


class TritonEngine(Engine):
    """Engine whose forward runs on a Triton server; see the module docstring for the failure behaviour."""

    backend = "triton"

    def __init__(self, model: str, settings: TritonSettings, **kwargs: Any) -> None:
        self._grpc = import_tritonclient()
        if kwargs.get("ref_view_strategy", "first") != "first":
            raise ConfigError("the triton backend pins view 0 as the reference (ref_view_strategy 'first')")
        source = OnnxSource(model, ArtifactCache(None))  # the variant only: nothing is exported or loaded
        super().__init__(source.variant, f"{source.label} on triton://{settings.url}/{settings.model_name}",
                         source.trained, **kwargs)
        self.settings = settings
        self._expected = graph_outputs(self.variant)
        self._client: Any = None
        self._server: ServerModel | None = None
        self._retry_at = 0.0
        self._delay_s = BACKOFF_S[0]
        self.state = "not connected yet"
        self._ever_connected = False
        self._abandoned: _Request | None = None  # a request given up on that the server may still be running
        self._late_since: float | None = None  # first timeout since the last answer
        self.reconnects = self.timeouts = self.dropped_busy = self.refused = 0
        self._refused_now = ""  # why the last set sent was refused (its shape and the fix); "" after an answer
        self.last_request_bytes = self.last_reply_bytes = 0
        try:
            self._connect()
        except EngineUnavailable as exc:  # start anyway: sets are dropped (and counted) until it answers
            _LOG.warning("%s; starting anyway and retrying", exc)

    # --- connection ------------------------------------------------------------------------------------
    def _new_client(self) -> Any:
        s = self.settings

        def read(path: str) -> bytes | None:
            return Path(path).expanduser().read_bytes() if path else None

        return self._grpc.InferenceServerClient(
            s.url, ssl=s.ssl, root_certificates=read(s.root_certificates), private_key=read(s.private_key),
            certificate_chain=read(s.certificate_chain))

    def _connect(self) -> ServerModel:
        from tritonclient.utils import InferenceServerException

        if self._server is not None:
            return self._server
        now = time.monotonic()
        if now < self._retry_at:
            raise EngineUnavailable(f"Triton server {self.settings.url}: {self.state}; next try in "
                                    f"{self._retry_at - now:.1f} s")
        s = self.settings
        try:
            self._client = self._client or self._new_client()
            self._client.is_server_live(headers=s.headers, client_timeout=PROBE_TIMEOUT_S)
            config = self._client.get_model_config(s.model_name, s.model_version, headers=s.headers, as_json=True,
                                                   client_timeout=PROBE_TIMEOUT_S)["config"]
        except InferenceServerException as exc:
            if _status(exc) in ("NOT_FOUND", "INVALID_ARG") and self._ever_connected:
                # the model we used is being reloaded, or a restarting server has not loaded it yet
                self._retry_later(f"not serving {s.model_name!r} now")
                raise EngineUnavailable(f"Triton server {s.url} is {self.state}") from None
            if _status(exc) in ("NOT_FOUND", "INVALID_ARG"):
                self._retry_later(f"has no model {s.model_name!r}")
                raise TritonModelError(
                    f"the Triton server at {s.url} has no model {s.model_name!r}"
                    f"{' version ' + s.model_version if s.model_version else ''} ({exc.message()}): set "
                    "triton.model to a model it serves, or start one with `da3-ros serve --name "
                    f"{s.model_name}`") from None
            self._retry_later(f"unreachable ({_status(exc) or exc.message()})")
            raise EngineUnavailable(f"Triton server {s.url} is {self.state}") from None
        server = ServerModel.from_config(config)
        served = _served_variant(config)
        if served and served != self.variant.name:
            self._retry_later("serves another model")
            raise TritonModelError(f"the server's model {s.model_name!r} is {served}, but `model` names "
                                   f"{self.variant.name}: set model to the checkpoint the server runs")
        missing = [o for o in self._expected if o not in server.outputs]
        if missing or "images" not in server.inputs:
            self._retry_later("serves a model of another kind")
            raise TritonModelError(
                f"the server's model {s.model_name!r} has inputs {sorted(server.inputs)} and outputs "
                f"{server.outputs}; {self.variant.name} needs input 'images' and outputs {self._expected}: serve "
                f"the checkpoint that `model` names ({self.label.split(' on triton')[0]})")
        if self._ever_connected:
            self.reconnects += 1
            _LOG.warning("Triton server %s is back: model %s", s.url, s.model_name)
        self._server, self.state, self._delay_s, self._ever_connected = server, "connected", BACKOFF_S[0], True
        return server

    def _retry_later(self, state: str) -> None:
        self._server = None
        self.state = state
        self._retry_at = time.monotonic() + self._delay_s
        self._delay_s = min(self._delay_s * 2, BACKOFF_S[1])

    # --- inference -------------------------------------------------------------------------------------
    def _forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        server = self._connect()
        try:
            out = self._run(server, feeds)
        except TritonModelError as exc:  # a shape the server's model does not serve: said in health() until an answer
            self.refused += 1
            self._refused_now = f"its model refuses the {set_shape(feeds)} sets sent now ({exc})"
            raise
        self._refused_now = ""
        return out

    def _run(self, server: ServerModel, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request for a connected server: checked against its config, sent, waited for."""
        server.check(feeds)
        self._check_abandoned()
        s = self.settings
        request = self._send(feeds)
        if not request.done.wait(s.timeout_s):
            # Left to finish on the server (it would run it anyway): the next sets wait for it, not behind it.
            self._abandoned = request
            self.timeouts += 1
            self._late_since = self._late_since or request.sent_t
            raise EngineUnavailable(f"Triton server {s.url} gave no answer within {s.timeout_s} s "
                                    "(triton.timeout_s); sets are dropped until that request has ended there")
        if request.error is not None:
            self._raise_for(request.error)
        self._late_since = None
        self.last_request_bytes = sum(int(v.nbytes) for v in feeds.values())
        out = {name: request.result.as_numpy(name) for name in self._expected}
        self.last_reply_bytes = sum(int(v.nbytes) for v in out.values())
        return {name: np.asarray(v[0], dtype=np.float32) for name, v in out.items()}

    def _send(self, feeds: dict[str, np.ndarray]) -> _Request:
        """Start one request; its gRPC deadline is ABANDON_AFTER x timeout_s (the wait in _forward is shorter)."""
        from tritonclient.utils import InferenceServerException

        s = self.settings
        inputs = []
        for name, value in feeds.items():
            arr = np.ascontiguousarray(value, dtype=np.float32)
            inp = self._grpc.InferInput(name, list(arr.shape), "FP32")
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [self._grpc.InferRequestedOutput(name) for name in self._expected]
        request = _Request()
        try:
            # timeout (us): Triton's own request deadline, honoured where the model has a queue policy
            self._client.async_infer(s.model_name, inputs, request.callback, model_version=s.model_version,
                                     outputs=outputs, headers=s.headers, client_timeout=ABANDON_AFTER * s.timeout_s,
                                     timeout=int(s.timeout_s * 1e6))
        except InferenceServerException as exc:
            self._raise_for(exc)
        return request

    def _check_abandoned(self) -> None:
        """EngineUnavailable while this engine's abandoned request still runs on the server, so none piles up."""
        request = self._abandoned
        if request is None:
            return
        s = self.settings
        if not request.done.is_set():
            self.dropped_busy += 1
            raise EngineUnavailable(
                f"Triton server {s.url} is still running this rig's request given up "
                f"{time.monotonic() - request.sent_t:.1f} s ago (triton.timeout_s {s.timeout_s} s): set dropped, "
                "not queued behind it")
        self._abandoned = None
        if request.error is not None and _status(request.error) == "DEADLINE_EXCEEDED":
            self._retry_later(f"stuck (no answer in {ABANDON_AFTER * s.timeout_s:g} s)")
            raise EngineUnavailable(f"Triton server {s.url} is {self.state}; reconnecting")

    def _raise_for(self, exc: Any) -> None:
        """Turn a failed request into EngineUnavailable (retry), TritonModelError (config) or RuntimeError."""
        s = self.settings
        status, message = _status(exc), exc.message()
        if UNSERVED_MARK in (message or ""):  # da3-ros serve refused a shape it was not started with
            raise TritonModelError(f"the Triton server at {s.url}: {message}") from None
        if status == "DEADLINE_EXCEEDED":  # the server's own deadline (the request's timeout) may end it first
            self.timeouts += 1
            raise EngineUnavailable(f"Triton server {s.url} gave no answer within {s.timeout_s} s "
                                    f"(triton.timeout_s): {message}") from None
        if status in ("UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL", "RESOURCE_EXHAUSTED", "NOT_FOUND", ""):
            # the server or its model went away (NOT_FOUND: unloaded); reconnect, re-checking the model
            self._retry_later(f"lost ({status or message})")
            raise EngineUnavailable(f"Triton server {s.url} {self.state}: {message}") from None
        raise RuntimeError(f"the Triton server rejected the request ({status}): {message}") from None

    def health(self) -> tuple[bool, dict[str, str]]:
        """Connection state, why sets cannot run now (``triton.problem``) and counters, for /diagnostics."""
        ok, state = self._server is not None and self.state == "connected", self.state
        if ok and self._late_since is not None:  # connected, but the answers do not come in time
            ok = False
            state = (f"every request timed out for {time.monotonic() - self._late_since:.0f} s ({self.timeouts} "
                     f"timeouts so far): the server is slower than triton.timeout_s ({self.settings.timeout_s:g} "
                     "s); raise it or give the server faster hardware")
        elif ok and self._refused_now:  # connected, but the sets of the rig's present shape are refused
            ok, state = False, f"connected, but {self._refused_now}"
        values = {
            **super().health()[1],  # device and precision, as every engine says them
            "triton.url": self.settings.url, "triton.model": self.settings.model_name, "triton.state": state,
            "triton.reconnects": str(self.reconnects), "triton.timeouts": str(self.timeouts),
            "triton.dropped_busy": str(self.dropped_busy), "triton.refused": str(self.refused),
            "triton.request_bytes": str(self.last_request_bytes), "triton.reply_bytes": str(self.last_reply_bytes)}
        if not ok:
            values["triton.problem"] = f"Triton server {self.settings.url}: {state}"
        return ok, values


def _served_variant(config: dict) -> str:
    """The variant in a model config's da3_ros parameter (written by ``da3-ros export --triton-repo``), or ''."""
    from da3_ros.engines.onnx_source import META_KEY

    text = config.get("parameters", {}).get(META_KEY, {}).get("string_value", "")
    try:
        return str(json.loads(text).get("variant", "")) if text else ""
    except (ValueError, AttributeError):
        return ""


def _status(exc: Any) -> str:
    """``StatusCode.UNAVAILABLE`` -> ``UNAVAILABLE`` ('' when the client gave none)."""
    return str(exc.status() or "").rpartition(".")[2]
