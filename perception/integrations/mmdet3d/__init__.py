"""The fusion network inside OpenMMLab pipelines (mmdet3d 1.4 / mmengine), in its own venv (``make test-mmdet3d``).

Modules (docs/mmdet3d.md has the how-to):

- ``boxes``: this project's box convention <-> ``LiDARInstance3DBoxes`` tensors, and rigid box transforms. numpy
  and torch only.
- ``infos``: mmdet3d v1.1 nuScenes info files -> Frames (the dataset adapter), and the converter that writes such
  info files for any nuScenes-format root (the synthetic one included). No OpenMMLab import.
- ``dataset``: the adapter registered as an mmdet3d dataset, and the collate function (Frames -> the network's
  inputs and ``Det3DDataSample``s). Imports mmdet3d.
- ``detector``: ``FusionDetector``, the network registered as an mmdet3d detector. Imports mmdet3d.

This ``__init__`` imports nothing, so that ``infos`` and ``boxes`` work without OpenMMLab installed; a config
registers the OpenMMLab side by importing ``dataset`` and ``detector`` (configs/mmdet3d/*.py do).
"""
