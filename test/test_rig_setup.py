"""The rig from the node's parameters (da3_ros.core.rig_setup), without a node."""
import numpy as np
import pytest

from da3_ros.core.rig_setup import known_extrinsics


def test_known_extrinsics_follow_pose_conditioning_and_put_the_reference_at_the_origin():
    poses = [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [1.5, 0.0, 0.0, 0.0, 0.0, 0.7071068, 0.7071068]]
    T = known_extrinsics("params", poses, ["left", "right"], 0, True)
    np.testing.assert_allclose(T[0], np.eye(4), atol=1e-12)  # the reference is the origin, whatever was given
    np.testing.assert_allclose(T[1][:3, 3], [0.5, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(T[1][:3, :3] @ [1.0, 0, 0], [0.0, 1.0, 0.0], atol=1e-6)  # 90 deg about z
    assert known_extrinsics("auto", [poses[0], []], ["left", "right"], 0, True) is None  # not every camera
    assert known_extrinsics("tf_static", poses, ["left", "right"], 0, True) is None
    notes: list = []
    assert known_extrinsics("params", poses, ["left", "right"], 0, False, notes.append) is None
    assert "takes no pose conditioning" in notes[0]
    with pytest.raises(ValueError, match=r"for \['right'\]"):
        known_extrinsics("params", [poses[0], [1.0, 2.0]], ["left", "right"], 0, True)
    with pytest.raises(ValueError, match="pose_conditioning must be one of"):
        known_extrinsics("sometimes", poses, ["left", "right"], 0, True)
