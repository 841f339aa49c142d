#!/usr/bin/env bash
# Idempotent set-up of a bare Debian 12 / Python 3.11 machine (no ROS, no GPU): a venv in .venv with the
# ROS 2 Kilted wheels, torch 2.13 CPU, upstream Depth Anything 3, and this package built into it with CMake.
# Re-running it only rebuilds what changed. Stock ROS installs use colcon instead (see README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DA3_VENV:-$ROOT/.venv}"
BUILD="$ROOT/build/venv"
PY_SYS="${PYTHON:-python3}"
log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY_SYS" -m venv "$VENV"; }
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check -c "$ROOT/requirements/constraints.txt")

fix_cmake_exports() {  # fix_cmake_exports VENV
  # The wheels' exported CMake files name the wheel builder's Python and numpy include dirs: point them
  # at the venv's own so that rosidl can generate Python bindings here.
  local py_inc np_inc
  py_inc="$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_inc="$("$1/bin/python" -c 'import numpy; print(numpy.get_include())')"
  { grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$1/share" || true; } | xargs -0 -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g"
}

# The two test legs' venvs install their wheels (no dependency on the main venv's contents) in the background
# while the main venv installs: pip is single-threaded here, and this machine has two cores.
main_site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
NP2="$VENV-numpy2"
np2_want="$(sha256sum < "$ROOT/requirements/numpy2.txt" | cut -d' ' -f1) $main_site"
np2_pid=""
if [ "$(cat "$NP2/.da3_numpy2" 2>/dev/null)" != "$np2_want" ]; then
  # numpy first, the .pth after (below): pip must not see (and try to replace) the main venv's numpy
  log "creating $NP2 (numpy 2 over $VENV's packages)"
  ( "$PY" -m venv --clear "$NP2"  # same base interpreter as $VENV: the shared packages' extensions load
    "$NP2/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements/numpy2.txt" ) & np2_pid=$!
fi
JZ="$VENV-jazzy"
jz_want="$(sha256sum < "$ROOT/requirements/ros-jazzy.txt" | cut -d' ' -f1) $main_site"
jz_pid=""
if [ "$(cat "$JZ/.da3_jazzy" 2>/dev/null)" != "$jz_want" ]; then
  log "creating $JZ (ROS 2 Jazzy wheels, then $VENV's packages)"
  ( "$PY" -m venv --clear "$JZ"
    "$JZ/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements/ros-jazzy.txt"
    fix_cmake_exports "$JZ" ) & jz_pid=$!
  rm -rf "$BUILD/jazzy"  # built against the previous wheels
fi

# Python dependencies: reinstall only when a requirements file changed.
stamp="$VENV/.da3_ros_requirements"
want="$(cat "$ROOT"/requirements/*.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages (torch CPU wheel, ROS 2 Kilted wheels, DA3) into $VENV"
  # --no-compile: pip byte-compiles the ~14,600 modules one by one (~30 s); they are compiled below, beside the
  # CMake builds
  "${PIP[@]}" --no-compile -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/serve.txt" -r "$ROOT/requirements/ros.txt" \
    -r "$ROOT/requirements/test.txt"
  "${PIP[@]}" --no-deps -r "$ROOT/requirements/nodeps.txt"
  fix_cmake_exports "$VENV"
  echo "$want" > "$stamp"
fi

# Byte-compile the packages, in the background while the CMake builds run. Not left to first import: where
# PYTHONDONTWRITEBYTECODE is set (as on the CI machines) nothing is ever cached, and every process (each node, each
# export child) compiled torch's modules again: the test suite took 724 s instead of 593 s.
compiled="$VENV/.da3_ros_compiled"
compile_pid=""
if [ "$(cat "$compiled" 2>/dev/null)" != "$want" ]; then
  log "byte-compiling $VENV's packages"
  ( "$PY" -m compileall -q -j "$(nproc)" "$main_site" >/dev/null || true; echo "$want" > "$compiled" ) & compile_pid=$!
fi

cmake_install() {  # cmake_install SRC BUILD_DIR [VENV]: into $VENV unless another venv is named
  local prefix="${3:-$VENV}"
  cmake -S "$1" -B "$2" -DCMAKE_INSTALL_PREFIX="$prefix" -DPython3_EXECUTABLE="$prefix/bin/python" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -Wno-dev >/dev/null
  cmake --build "$2" -j"$(nproc)" >/dev/null
  cmake --install "$2" >/dev/null
}

export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"

# Modules that moved or went since the last install would shadow nothing but could still be imported by
# mistake: remove installed .py files that the source tree no longer has (msg/ is rosidl's, kept).
prune_installed() {  # prune_installed VENV
  local installed
  installed="$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/da3_ros"
  if [ -d "$installed" ]; then
    (cd "$installed" && find . -name '*.py' -not -path './msg/*' -print0) | while IFS= read -r -d '' f; do
      [ -e "$ROOT/da3_ros/$f" ] || rm -f "$installed/$f"
    done
  fi
}
# The Jazzy leg (test/test_jazzy_leg.py): a venv with the ROS 2 Jazzy wheels (requirements/ros-jazzy.txt) and every
# ROS package the node imports built there against Jazzy's rosidl (tf2_msgs, the video transports' messages, da3_ros
# with its msg/), then the main venv's packages AFTER its own (a .pth line), so torch, onnxruntime, OpenCV, PyAV and
# DA3 are shared while rclpy and every message package come from Jazzy. Built beside the main venv's packages.
[ -z "$jz_pid" ] || wait "$jz_pid"
jz_site="$("$JZ/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$jz_site/zz_da3_main_venv.pth"  # while building, Python in $JZ sees Jazzy's packages only
(
  # a Kilted process's library path (its wheels' start-up guard and LD_LIBRARY_PATH) must not reach Jazzy's Python
  unset _ROS_WHEELS_BOOTSTRAP_COMPLETE LD_LIBRARY_PATH
  export AMENT_PREFIX_PATH="$JZ" CMAKE_PREFIX_PATH="$JZ" PATH="$JZ/bin:$PATH"
  pids=()  # the four packages depend on none of each other: built side by side (30 -> 18 s here)
  for pkg in tf2_msgs ffmpeg_image_transport_msgs foxglove_msgs; do
    [ -d "$jz_site/$pkg/msg" ] && continue
    log "building local $pkg into $JZ"
    cmake_install "$ROOT/interfaces/$pkg" "$BUILD/jazzy/$pkg" "$JZ" & pids+=($!)
  done
  log "building da3_ros into $JZ"
  prune_installed "$JZ"
  cmake_install "$ROOT" "$BUILD/jazzy/da3_ros" "$JZ" & pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid"; done
) & jz_build_pid=$!

# The main venv's four packages depend on none of each other: built side by side, as in the Jazzy venv above.
pids=()
# tf2_msgs is not on PyPI. Build our stand-in only where none is importable, so a real ROS install's
# tf2_msgs is never shadowed. The video transports' messages (cameras.<name>.transport ffmpeg / foxglove), likewise.
for pkg in tf2_msgs ffmpeg_image_transport_msgs foxglove_msgs; do
  if ! "$PY" -c "import $pkg.msg" 2>/dev/null; then
    log "building local $pkg into $VENV"
    cmake_install "$ROOT/interfaces/$pkg" "$BUILD/$pkg" & pids+=($!)
  fi
done
log "building da3_ros (msg/ + Python package) into $VENV"
prune_installed "$VENV"
cmake_install "$ROOT" "$BUILD/da3_ros" & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
"$PY" -m compileall -q "$main_site/da3_ros" >/dev/null  # installed (or updated) just now
(cd / && "$PY" -c 'import da3_ros.msg, da3_ros.models, rclpy, tf2_msgs.msg, foxglove_msgs.msg, ffmpeg_image_transport_msgs.msg')
# The numpy-2 leg (test/test_numpy2_leg.py): a venv holding numpy 2 only, which then sees the main venv's packages
# AFTER its own (a .pth line appends them), so numpy 2 shadows 1.26 and torch, onnxruntime, OpenCV and DA3 are shared.
if [ -n "$np2_pid" ]; then
  wait "$np2_pid"
  np2_site="$("$NP2/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$main_site" > "$np2_site/zz_da3_main_venv.pth"
  echo "$np2_want" > "$NP2/.da3_numpy2"
fi

wait "$jz_build_pid"
"$JZ/bin/python" -m compileall -q "$jz_site/da3_ros" >/dev/null
echo "$main_site" > "$jz_site/zz_da3_main_venv.pth"
(cd / && env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u LD_LIBRARY_PATH AMENT_PREFIX_PATH="$JZ" "$JZ/bin/python" -c \
  'import da3_ros.msg, rclpy, tf2_msgs.msg, foxglove_msgs.msg, ffmpeg_image_transport_msgs.msg')
echo "$jz_want" > "$JZ/.da3_jazzy"
[ -z "$compile_pid" ] || wait "$compile_pid"

log "ready: source scripts/env.sh to use $VENV"
