"""The ROS-free core: parameters and config, sync, rig set-up, per-set processing, geometry, results.

Imports numpy, scipy and yaml only: never rclpy nor a message package (test/test_layers.py).
"""
