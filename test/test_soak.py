"""The soak's 60 s form: 3 cameras at 30 Hz into the slower engine; memory flat, latency bounded, clean exit."""
import subprocess
import sys

from ros_harness import REPO, ros_env


def test_soak_60_s(tmp_path, domain_id):
    """benchmarks/soak.py asserts its own bounds (exit 0); the 10-minute figures are in BENCHMARKS.md."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--seconds", "40", "--warmup-s", "30",
                          "--domain-id", str(domain_id), "--cache-dir", str(tmp_path / "cache")],
                         env=ros_env(domain_id), capture_output=True, text=True, timeout=300, check=False)
    print(out.stdout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "PASS: memory flat within 5 %" in out.stdout and "PASS: clean exit on SIGINT" in out.stdout
