"""Depth Anything 3 on a multi-camera rig described by a parameter file.

ros2 launch da3_ros rig.launch.py rig_file:=/path/to/my_rig.yaml device:=cuda
# demo without cameras (rig_player publishes videos/photos as front/left/right):
ros2 launch da3_ros rig.launch.py rig_file:=$(ros2 pkg prefix da3_ros)/share/da3_ros/config/demo_rig.yaml \
        model:=random:da3-small use_player:=true examples_dir:=/path/to/da3_examples rviz:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from da3_ros.ros.launch_helpers import (LaunchArgumentError, given, node_params, player_examples_dir,
                                    write_rviz_config)


def generate_launch_description():
    share = FindPackageShare("da3_ros")
    namespace = LaunchConfiguration("namespace")
    args = [
        DeclareLaunchArgument("rig_file", default_value=PathJoinSubstitution([share, "config", "stereo.yaml"]),
                              description="node parameters: camera_names, reference_camera, cameras.<name>.*"),
        # empty = keep the rig file's value (node default when the file has none): surround4.yaml's
        # device: cuda and demo_rig.yaml's model: random:da3-small must not be overridden by launch defaults.
        DeclareLaunchArgument("model", default_value="",
                              description="HF repo id, local dir, variant name or random:<variant> "
                                          "(empty: rig_file's model, else depth-anything/DA3-SMALL)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="inference backend: auto, torch, onnxruntime, tensorrt, triton, openvino "
                                          "(empty: the rig_file's, else auto)"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu, cuda, cuda:1, ... (empty: rig_file's, else cpu)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node here"),
        DeclareLaunchArgument("use_player", default_value="false",
                              description="also start rig_player (videos/photos as a synchronized rig)"),
        DeclareLaunchArgument("player_file",
                              default_value=PathJoinSubstitution([share, "config", "demo_player.yaml"]),
                              description="rig_player parameters"),
        DeclareLaunchArgument("examples_dir", default_value="",
                              description="folder of player_file's relative sources (the da3_examples folder); "
                                          "empty: $DA3_EXAMPLES"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 with config/da3.rviz, fixed frame = the reference "
                                          "camera's frame"),
    ]

    def check_arguments(context):  # before anything starts: a bad file fails the launch, loudly
        node_params(LaunchConfiguration("rig_file").perform(context), "rig_file")
        if IfCondition(LaunchConfiguration("use_player")).evaluate(context):
            player_examples_dir(LaunchConfiguration("player_file").perform(context),
                                LaunchConfiguration("examples_dir").perform(context))
        if IfCondition(LaunchConfiguration("rviz")).evaluate(context):
            try:
                FindPackageShare("rviz2").perform(context)
            except Exception as exc:  # PackageNotFoundError: say it before the node starts
                raise LaunchArgumentError(f"rviz:=true but rviz2 is not installed ({exc})") from None
        return []

    def depth_node(context):
        rig_file = LaunchConfiguration("rig_file").perform(context)
        overrides = given({  # after the file; only the arguments actually set
            "model": LaunchConfiguration("model").perform(context),
            "backend": LaunchConfiguration("backend").perform(context),
            "device": LaunchConfiguration("device").perform(context),
        })
        return [Node(
            package="da3_ros",
            executable="depth_node",
            name="da3_depth",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[rig_file, overrides],
            on_exit=Shutdown(reason="depth_node exited"),
        )]

    def player_node(context):
        player_file = LaunchConfiguration("player_file").perform(context)
        examples_dir = player_examples_dir(player_file, LaunchConfiguration("examples_dir").perform(context))
        return [Node(
            package="da3_ros",
            executable="rig_player",
            name="rig_player",
            namespace=namespace,
            output="screen",
            parameters=[player_file, {"examples_dir": examples_dir}],
        )]

    def rviz_node(context):
        template = PathJoinSubstitution([share, "config", "da3.rviz"]).perform(context)
        rviz_file = write_rviz_config(template, node_params(LaunchConfiguration("rig_file").perform(context),
                                                            "rig_file"))
        return [Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            namespace=namespace,  # the display topics are relative, like the node's outputs
            arguments=["-d", rviz_file],
        )]

    check = OpaqueFunction(function=check_arguments)
    depth = OpaqueFunction(function=depth_node)
    player = OpaqueFunction(function=player_node, condition=IfCondition(LaunchConfiguration("use_player")))
    rviz = OpaqueFunction(function=rviz_node, condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription(args + [check, depth, player, rviz])
