"""Depth Anything 3 on a multi-camera rig described by a parameter file.

ros2 launch da3_ros rig.launch.py rig_file:=/path/to/my_rig.yaml device:=cuda
# demo without cameras (rig_player publishes videos/photos as front/left/right):
ros2 launch da3_ros rig.launch.py rig_file:=$(ros2 pkg prefix da3_ros)/share/da3_ros/config/demo_rig.yaml \
        model:=random:da3-small use_player:=true rviz:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
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
        DeclareLaunchArgument("model", default_value="depth-anything/DA3-SMALL",
                              description="HF repo id, local dir, variant name or random:<variant>"),
        DeclareLaunchArgument("backend", default_value="torch", description="inference backend"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda, cuda:1, ..."),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node here"),
        DeclareLaunchArgument("use_player", default_value="false",
                              description="also start rig_player (videos/photos as a synchronized rig)"),
        DeclareLaunchArgument("player_file",
                              default_value=PathJoinSubstitution([share, "config", "demo_player.yaml"]),
                              description="rig_player parameters"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2 with config/da3.rviz"),
    ]
    depth = Node(
        package="da3_ros",
        executable="depth_node",
        name="da3_depth",
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("rig_file"),
            {  # overrides, after the file
                "model": LaunchConfiguration("model"),
                "backend": LaunchConfiguration("backend"),
                "device": LaunchConfiguration("device"),
            },
        ],
    )
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
