"""sensor_msgs/PointCloud2 and LaserScan <-> numpy points, colours, fields and ranges."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import LaserScan, PointCloud2, PointField
from std_msgs.msg import Header

from da3_ros.ros.conversions.stamps import ConversionError


_XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, n in enumerate("xyz")]
# rgb is declared FLOAT32 but holds the uint32 0x00RRGGBB bit pattern (PCL / RViz), so it is stored as <u4.
_FIELD_TYPES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
                PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
                PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}


def xyz_rgb_to_pointcloud2(points: np.ndarray, header: Header, rgb: np.ndarray | None = None,
                           confidence: np.ndarray | None = None) -> PointCloud2:
    """Points (M, 3), optional colours (M, 3) uint8 and confidences (M,) -> unorganised PointCloud2 (height 1).

    Fields x, y, z FLOAT32 at offsets 0, 4, 8, then, when given, ``rgb`` (a FLOAT32 field holding the packed
    0x00RRGGBB uint32 bit pattern, as PCL and RViz expect) and ``confidence`` (FLOAT32), densely packed.
    is_dense is True exactly when every point is finite.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ConversionError(f"points must be (M, 3), got {points.shape}")
    m = points.shape[0]
    names, formats, fields = ["x", "y", "z"], ["<f4"] * 3, list(_XYZ_FIELDS)
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (m, 3) or rgb.dtype != np.uint8:
            raise ConversionError(f"rgb must be ({m}, 3) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
        fields.append(PointField(name="rgb", offset=4 * len(names), datatype=PointField.FLOAT32, count=1))
        names.append("rgb")
        formats.append("<u4")
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != (m,):
            raise ConversionError(f"confidence must be ({m},), got shape {confidence.shape}")
        fields.append(PointField(name="confidence", offset=4 * len(names), datatype=PointField.FLOAT32, count=1))
        names.append("confidence")
        formats.append("<f4")
    cloud = np.empty(m, dtype=np.dtype({"names": names, "formats": formats,
                                        "offsets": [4 * i for i in range(len(names))], "itemsize": 4 * len(names)}))
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    if rgb is not None:
        c = rgb.astype(np.uint32)
        cloud["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    if confidence is not None:
        cloud["confidence"] = confidence
    step = cloud.dtype.itemsize
    return PointCloud2(header=header, height=1, width=m, fields=fields, is_bigendian=False, point_step=step,
                       row_step=step * m, data=cloud.tobytes(), is_dense=bool(np.isfinite(points).all()))


def pointcloud2_field(msg: PointCloud2, name: str) -> np.ndarray:
    """One FLOAT32 field of an unorganised little-endian cloud (e.g. ``confidence``) as (M,) float32."""
    f = next((f for f in msg.fields if f.name == name), None)
    if f is None or f.datatype != PointField.FLOAT32:
        raise ConversionError(f"PointCloud2 has no FLOAT32 field {name!r}; has {[f.name for f in msg.fields]}")
    m = int(msg.width) * int(msg.height)
    return np.ndarray((m,), dtype="<f4", buffer=bytes(msg.data), offset=int(f.offset),
                      strides=(int(msg.point_step),)).copy()


def laser_scan(ranges: np.ndarray, header: Header, angle_min: float, angle_increment: float, range_min: float,
               range_max: float, scan_time_s: float = 0.0) -> LaserScan:
    """A sensor_msgs/LaserScan of (B,) ranges (+Inf: nothing seen in that direction, REP 117)."""
    ranges = np.asarray(ranges, dtype=np.float32)
    return LaserScan(header=header, angle_min=float(angle_min),
                     angle_max=float(angle_min + angle_increment * (len(ranges) - 1)),
                     angle_increment=float(angle_increment), time_increment=0.0, scan_time=float(scan_time_s),
                     range_min=float(range_min), range_max=float(range_max), ranges=ranges.tolist())


def pointcloud2_to_xyz_rgb(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 -> (points (M, 3) float32, colours (M, 3) uint8 or None), M = height * width.

    Fields are read by name and offset, so any point_step, row_step padding and byte order work; x, y, z
    may be FLOAT32 or FLOAT64; colours come from a packed ``rgb`` or ``rgba`` field (FLOAT32 or UINT32).
    """
    by_name = {f.name: f for f in msg.fields}
    missing = [n for n in "xyz" if n not in by_name]
    if missing:
        raise ConversionError(f"PointCloud2 lacks field(s) {missing}; has {sorted(by_name)}")
    color = next((by_name[n] for n in ("rgb", "rgba") if n in by_name), None)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in [by_name["x"], by_name["y"], by_name["z"]] + ([color] if color is not None else []):
        kind = _FIELD_TYPES.get(f.datatype)
        if f.name in ("x", "y", "z") and kind not in ("f4", "f8"):
            raise ConversionError(f"PointCloud2 field {f.name!r} has datatype {f.datatype}, expected a float")
        if f.name not in ("x", "y", "z") and kind not in ("f4", "u4", "i4"):
            raise ConversionError(f"PointCloud2 field {f.name!r} has datatype {f.datatype}, expected 4 bytes")
        if f.name not in ("x", "y", "z"):
            kind = "u4"  # the colour's bit pattern, whatever the declared type
        names.append(f.name)
        formats.append(order + kind)
        offsets.append(int(f.offset))
    h, w, step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    if max(o + np.dtype(k).itemsize for o, k in zip(offsets, formats)) > step:
        raise ConversionError(f"PointCloud2 fields {names} at offsets {offsets} overrun point_step {step}")
    if h * w and row_step < w * step:
        raise ConversionError(f"PointCloud2 row_step {row_step} < width {w} * point_step {step}")
    n = len(msg.data)
    if h * w and n < row_step * (h - 1) + w * step:
        raise ConversionError(f"PointCloud2 {w}x{h}: data has {n} bytes, row_step {row_step}, "
                              f"point_step {step}")
    if h * w == 0:
        return np.zeros((0, 3), np.float32), None if color is None else np.zeros((0, 3), np.uint8)
    buf = np.frombuffer(msg.data, np.uint8)
    cloud = np.ndarray((h, w), dtype=dtype, buffer=buf, strides=(row_step, step))
    points = np.empty((h * w, 3), dtype=np.float32)
    for i, name in enumerate("xyz"):
        points[:, i] = cloud[name].ravel()
    if color is None:
        return points, None
    packed = cloud[color.name].ravel().astype(np.uint32)
    rgb = np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=1).astype(np.uint8)
    return points, rgb
