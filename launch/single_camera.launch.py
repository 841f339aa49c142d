"""Depth Anything 3 on one camera.

ros2 launch da3_ros single_camera.launch.py image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info device:=cuda
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from da3_ros.ros.launch_helpers import given, node_params, single_camera_overrides


def generate_launch_description():
    args = [  # empty = not given: the params file's value, else the node's default
        DeclareLaunchArgument("model", default_value="",
                              description="HF repo id, local dir, variant name or random:<variant> "
                                          "(empty: params_file's, else depth-anything/DA3-SMALL)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="inference backend: auto, torch, onnxruntime, tensorrt, triton, openvino "
                                          "(empty: params_file's, else auto)"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu, cuda, cuda:1, ... (empty: params_file's, else cpu)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("image_topic", default_value="",
                              description="input image topic of the params file's camera "
                                          "(empty: params_file's, else <camera>/image_raw)"),
        DeclareLaunchArgument("camera_info_topic", default_value="",
                              description="input camera_info topic (empty: params_file's, else <camera>/camera_info)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("da3_ros"), "config", "mono.yaml"]),
                              description="node parameters with ONE camera in camera_names (default: camera)"),
    ]

    def depth_node(context):
        params_file = LaunchConfiguration("params_file").perform(context)
        params = node_params(params_file, "params_file")  # a missing or unreadable file fails here, loudly
        overrides = given({  # after the file; only the arguments actually set
            "model": LaunchConfiguration("model").perform(context),
            "backend": LaunchConfiguration("backend").perform(context),
            "device": LaunchConfiguration("device").perform(context),
        })
        overrides.update(single_camera_overrides(params, LaunchConfiguration("image_topic").perform(context),
                                                 LaunchConfiguration("camera_info_topic").perform(context)))
        return [Node(
            package="da3_ros",
            executable="depth_node",
            name="da3_depth",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides],
            on_exit=Shutdown(reason="depth_node exited"),
        )]

    return LaunchDescription(args + [OpaqueFunction(function=depth_node)])
