"""The temporal window (issue 18): keyframes joined to each forward, windows aligned into one chain, odometry.

keyframes: the store and its rule, the window's layout; align: robust confidence-weighted Sim(3) / scale
fits between windows; chain: windows chained into one frame and unit, TUM trajectory files; tracker: the one
object a per-set processor holds. ROS-free, numpy only.
"""
