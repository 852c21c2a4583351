"""Geometry of the rig and of time. Imports nothing else of this project."""
from calibration.io import load_rig, rig_from_dict, rig_to_dict, save_rig
from calibration.rig import CalibrationError, Camera, Distortion, Lidar, Radar, Rig, StereoPair
from calibration.sync import PoseStream, SyncError

__all__ = [
    "CalibrationError", "Camera", "Distortion", "Lidar", "Radar", "Rig", "StereoPair",
    "PoseStream", "SyncError", "load_rig", "rig_from_dict", "rig_to_dict", "save_rig",
]
