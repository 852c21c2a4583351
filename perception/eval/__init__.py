"""Evaluation: the official nuScenes detection metrics through nuscenes-devkit (never reimplemented)."""
