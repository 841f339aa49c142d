"""Time in the core: stamps are integer nanoseconds (as ROS Time holds them), never float seconds."""
from __future__ import annotations

NS_PER_S = 1_000_000_000
