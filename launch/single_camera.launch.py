"""Depth Anything 3 on one camera.

ros2 launch da3_ros single_camera.launch.py image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info device:=cuda
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    args = [
        DeclareLaunchArgument("model", default_value="depth-anything/DA3-SMALL",
                              description="HF repo id, local dir, variant name or random:<variant>"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="inference backend: auto, torch, onnxruntime, tensorrt"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda, cuda:1, ..."),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="input image topic"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="input camera_info topic"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("da3_ros"), "config", "mono.yaml"]),
                              description="node parameters (camera_names: [camera])"),
    ]
    node = Node(
        package="da3_ros",
        executable="depth_node",
        name="da3_depth",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {  # overrides, after the file
                "model": LaunchConfiguration("model"),
                "backend": LaunchConfiguration("backend"),
                "device": LaunchConfiguration("device"),
                "cameras.camera.image_topic": LaunchConfiguration("image_topic"),
                "cameras.camera.camera_info_topic": LaunchConfiguration("camera_info_topic"),
            },
        ],
    )
    return LaunchDescription(args + [node])
