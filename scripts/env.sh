# Source me: puts the venv built by scripts/setup.sh first and confines ROS traffic to this machine.
_da3_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="${DA3_VENV:-$_da3_root/.venv}"
export PATH="$VIRTUAL_ENV/bin:$VIRTUAL_ENV/lib/da3_ros:$PATH"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# Large best-effort images over shared memory need a bigger segment than Fast DDS's default.
export FASTDDS_DEFAULT_PROFILES_FILE="$_da3_root/config/fastdds_profile.xml"
# Kilted ignores ROS_LOCALHOST_ONLY; this keeps discovery on loopback.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _da3_root
