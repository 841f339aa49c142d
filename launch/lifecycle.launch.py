"""Depth Anything 3 as a managed (lifecycle) node, e.g. under Nav2's lifecycle manager.

ros2 launch da3_ros lifecycle.launch.py rig_file:=/path/rig.yaml                   # configure + activate now
ros2 launch da3_ros lifecycle.launch.py autostart:=false   # then add da3_depth to a lifecycle manager's node_names
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from da3_ros.ros.launch_helpers import node_params


class ShutdownOnce(Shutdown):
    """``Shutdown``, unless launch is already shutting down (Ctrl-C, SIGTERM).

    A second Shutdown event during a shutdown makes launch_ros shut its ROS adapter (created for a
    LifecycleNode's services) down twice: "Cannot shutdown a ROS adapter that is not running", exit 1.
    """

    def execute(self, context):
        if context.is_shutdown:
            return None
        return super().execute(context)


def generate_launch_description():
    args = [
        DeclareLaunchArgument(
            "rig_file", default_value=PathJoinSubstitution([FindPackageShare("da3_ros"), "config", "stereo.yaml"]),
            description="node parameters (cameras, model, backend, nav.*)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at once; false leaves it to a lifecycle manager"),
    ]

    def managed_node(context):
        rig_file = LaunchConfiguration("rig_file").perform(context)
        node_params(rig_file, "rig_file")  # a missing or unreadable file fails here, loudly
        node = LifecycleNode(package="da3_ros", executable="depth_lifecycle_node", name="da3_depth",
                             namespace=LaunchConfiguration("namespace"), output="screen", emulate_tty=True,
                             parameters=[rig_file], on_exit=ShutdownOnce(reason="depth_lifecycle_node exited"))
        autostart = IfCondition(LaunchConfiguration("autostart"))
        configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                transition_id=Transition.TRANSITION_CONFIGURE), condition=autostart)
        activate_when_configured = RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))]), condition=autostart)
        return [node, activate_when_configured, configure]

    return LaunchDescription(args + [OpaqueFunction(function=managed_node)])
