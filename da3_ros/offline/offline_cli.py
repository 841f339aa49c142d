"""Arguments of ``da3-ros bag`` and ``da3-ros media`` (argparse only: the heavy modules load when they run)."""
from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params-file", help="the node's parameter file (same names and meaning as for depth_node)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME:=VALUE",
                   help="override one parameter, as -p for the node (repeatable)")
    p.add_argument("--model", help="shorthand for -p model:=...")
    p.add_argument("--backend", help="shorthand for -p backend:=...")
    p.add_argument("--every-n", type=int, default=1, help="process every n-th set (default: every set)")
    p.add_argument("--start", type=float, default=0.0, help="skip the first seconds of the input")
    p.add_argument("--duration", type=float, default=0.0, help="process this many seconds (0: to the end)")
    p.add_argument("--trajectory", metavar="FILE.tum",
                   help="with temporal.keyframes > 0: the reference camera's odometry per set as a TUM file "
                        "(evo reads it); media writes <out>/trajectory.tum unless told otherwise")


def _bag(args: argparse.Namespace) -> int:
    from da3_ros.offline.bag import cmd_bag

    return cmd_bag(args)


def _media(args: argparse.Namespace) -> int:
    from da3_ros.offline.media import cmd_media

    return cmd_media(args)


def add_offline_parsers(sub) -> None:
    """Add the ``bag`` and ``media`` sub-commands to ``da3-ros``'s sub-parsers."""
    bag = sub.add_parser("bag", help="a ROS 2 bag (MCAP) in; depth, clouds, TF and results as a bag out")
    bag.add_argument("input", help="input bag: an .mcap file (rosbag2's default storage)")
    bag.add_argument("--out", required=True, help="output .mcap (ros2 bag info/play, Foxglove)")
    _common(bag)
    bag.add_argument("--nav", action="store_true", help="also points_obstacles and scan (nav.* parameters)")
    bag.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    bag.set_defaults(func=_bag)
    media = sub.add_parser("media", help="videos and image folders as cameras; npz, PNG and PLY per set out")
    media.add_argument("--video", action="append", default=[], metavar="[NAME=]FILE", help="a video as a camera")
    media.add_argument("--images", action="append", default=[], metavar="[NAME=]DIR",
                       help="a folder of images (sorted by name) as a camera")
    media.add_argument("--camera-info", action="append", default=[], metavar="NAME=YAML",
                       help="a camera's calibration in the ROS format (default: the model estimates K)")
    media.add_argument("--rate-hz", type=float, default=10.0,
                       help="frame rate of image folders (stamps, --start/--duration) when no video gives one")
    media.add_argument("--out", default="out/media", help="output folder")
    _common(media)
    media.set_defaults(func=_media)
