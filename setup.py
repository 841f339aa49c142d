"""pip path for the ROS-free core and CLI (`pip install .`); colcon builds the package with CMakeLists.txt."""
from setuptools import setup

setup()
