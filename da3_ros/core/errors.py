"""The project's own error for what a user set wrong (a parameter, a file, an option). ROS-free, torch-free.

Said in one line at start-up (``da3_ros.ros.ros_main.user_error_types``) because its message names the bad value
and the fix. A plain ``ValueError`` is not one of them: it is a bug and keeps its traceback.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A value given by the user that cannot work; the message names it, what is allowed and the fix.

    A ``ValueError`` so that callers catching ``ValueError`` (``ros2 param set`` validation, the CLIs) still do.
    """
