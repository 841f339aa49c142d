"""Everything that knows ROS: message conversions, the one emitter, parameters, the nodes, player, launch."""
