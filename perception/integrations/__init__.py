"""Optional bridges to other frameworks. Nothing in the core (``calibration``, ``perception``, ``export``) imports
this package; each bridge lives in its own subpackage with its own environment (``mmdet3d``: ``make test-mmdet3d``,
see docs/mmdet3d.md)."""
