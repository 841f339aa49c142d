#!/usr/bin/env bash
# The test command (README, CI): set up the environment if needed, then run the whole suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
# Segments left by Fast DDS processes killed hard; safe to remove when none of ours is running.
# (fastrtps_*: Fast-RTPS 2's names, the Jazzy leg's.)
if ! pgrep -f 'da3_ros|rig_player' >/dev/null; then
  rm -f /dev/shm/fastdds_* /dev/shm/sem.fastdds_* /dev/shm/fastrtps_* /dev/shm/sem.fastrtps_* 2>/dev/null || true
fi
# Two workers' processes share two cores: OpenMP threads that spin while waiting for work (libgomp's default)
# burn the other worker's CPU. Passive waiting measured 10 % less wall time, 13 % less CPU on the node tests;
# da3_ros's ONNX Runtime sessions stop spinning under it too (engines/onnxruntime_engine.session_options).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cd "$ROOT"  # tests import the installed package, never the source tree (pytest, not python -m pytest)
# Three pytest-xdist workers by default, files the work units (module fixtures set up once), each worker with its
# own slice of ROS domain ids (test/ros_harness.py). Three on two cores: two workers left the cores idle 14 % of
# the time (waits on DDS, on servers starting); three kept them 95 % busy and ran the suite 5 % faster (737 -> 699 s,
# 2-core EPYC). DA3_TEST_WORKERS=0: one process. Files in the order test/conftest.py gives them (longest first), not
# xdist's by test count.
exec "$VIRTUAL_ENV/bin/pytest" -p no:cacheprovider --durations=30 -n "${DA3_TEST_WORKERS:-3}" --dist loadfile \
  --no-loadscope-reorder "$@"
