"""The offline CLI, run as a user would (installed entry point), on the real photos."""
import shutil
import subprocess

import cv2
import numpy as np

from conftest import EXAMPLES


def test_infer_writes_npz_and_pictures(tmp_path):
    exe = shutil.which("da3-ros")
    assert exe, "da3-ros is not on PATH (source scripts/env.sh)"
    images = [str(EXAMPLES / "SOH_000.png"), str(EXAMPLES / "SOH_010.png")]
    out = subprocess.run([exe, "infer", "--model", "random:da3-small@1", *images, "--out", str(tmp_path / "r.npz"),
                          "--intrinsics", "1000,1000,603.5,339.5"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "UNTRAINED" in out.stdout and "2 views in ONE forward" in out.stdout
    r = np.load(tmp_path / "r.npz")
    assert r["depth"].shape == (2, 280, 504) and r["confidence"].shape == (2, 280, 504)
    assert r["T_cam_world"].shape == (2, 4, 4) and not bool(r["trained"])
    # with --intrinsics the published K is the camera's, mapped to 504x280 (scale 504/1208)
    assert r["K_proc"][0, 0, 0] == np.float64(1000 * 504 / 1208)
    for stem in ("SOH_000", "SOH_010"):
        png = cv2.imread(str(tmp_path / f"{stem}_depth.png"))
        assert png is not None and png.shape == (280, 3 * 504, 3)


def test_infer_rejects_bad_input(tmp_path):
    out = subprocess.run(["da3-ros", "infer", "--model", "random:da3-small", str(tmp_path / "missing.png")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "cannot read image" in out.stderr


def test_export_then_infer_on_onnxruntime_equals_torch(tmp_path):
    """`da3-ros export` for a 2-camera rig, then `infer --backend onnxruntime` on that file: torch's depth."""
    images = [str(EXAMPLES / "SOH_000.png"), str(EXAMPLES / "SOH_010.png")]
    onnx_file = tmp_path / "rig.onnx"
    out = subprocess.run(["da3-ros", "export", "--model", "random:da3-small@1", "--camera-size", "1208x680",
                          "1208x680", "--out", str(onnx_file)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "2 views at 504x280" in out.stdout and onnx_file.stat().st_size > 1e6
    results = {}
    for backend, model in (("onnxruntime", str(onnx_file)), ("torch", "random:da3-small@1")):
        npz = tmp_path / f"{backend}.npz"
        out = subprocess.run(["da3-ros", "infer", "--backend", backend, "--model", model, *images, "--out", str(npz)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        results[backend] = np.load(npz)
    assert "UNTRAINED" in str(results["onnxruntime"]["model"])
    np.testing.assert_allclose(results["onnxruntime"]["depth"], results["torch"]["depth"], rtol=1e-5, atol=1e-6)
    # the same file for a 1-camera call: a clear error naming the export command
    out = subprocess.run(["da3-ros", "infer", "--backend", "onnxruntime", "--model", str(onnx_file), images[0],
                          "--out", str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "da3-ros export" in out.stderr
