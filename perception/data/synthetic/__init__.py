"""Synthetic scenes and sensor logs, and conversions of datasets into replayable formats (ROS 2 bags)."""
