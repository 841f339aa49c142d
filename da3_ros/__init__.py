"""da3_ros: Depth Anything 3 for ROS 2.

The core (models, preprocess, engines, prediction, geometry, sync, conversions) never imports rclpy; the node
and the CLI are thin adapters around it. ``da3_ros.msg`` holds the generated ROS interfaces.
"""
