"""Depth Anything 3 on a multi-camera rig described by a parameter file.

ros2 launch da3_ros rig.launch.py rig_file:=/path/to/my_rig.yaml device:=cuda
# demo without cameras (rig_player publishes videos/photos as front/left/right):
ros2 launch da3_ros rig.launch.py rig_file:=$(ros2 pkg prefix da3_ros)/share/da3_ros/config/demo_rig.yaml \
        model:=random:da3-small use_player:=true rviz:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


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
                              description="inference backend: auto, torch, onnxruntime, tensorrt "
                                          "(empty: the rig_file's, else auto)"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu, cuda, cuda:1, ... (empty: rig_file's, else cpu)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node here"),
        DeclareLaunchArgument("use_player", default_value="false",
                              description="also start rig_player (videos/photos as a synchronized rig)"),
        DeclareLaunchArgument("player_file",
                              default_value=PathJoinSubstitution([share, "config", "demo_player.yaml"]),
                              description="rig_player parameters"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2 with config/da3.rviz"),
    ]

    def depth_node(context):
        given = {  # overrides, after the file; only the arguments actually set
            "model": LaunchConfiguration("model").perform(context),
            "backend": LaunchConfiguration("backend").perform(context),
            "device": LaunchConfiguration("device").perform(context),
        }
        overrides = {k: v for k, v in given.items() if v}
        return [Node(
            package="da3_ros",
            executable="depth_node",
            name="da3_depth",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("rig_file"), overrides],
        )]

    depth = OpaqueFunction(function=depth_node)
    player = Node(
        package="da3_ros",
        executable="rig_player",
        name="rig_player",
        namespace=namespace,
        output="screen",
        parameters=[LaunchConfiguration("player_file")],
        condition=IfCondition(LaunchConfiguration("use_player")),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=namespace,  # the display topics are relative, like the node's outputs
        arguments=["-d", PathJoinSubstitution([share, "config", "da3.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(args + [depth, player, rviz])
