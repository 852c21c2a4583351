"""A hand-built camera for golden-value tests of projections (depth targets, perspective targets, depth metric):
64x176 input, stride-16 feature grid, at the ego origin looking along +x. Imported by the tests (on sys.path
through the root conftest, like small_model)."""
import numpy as np

IMAGE_HW, FEAT_HW = (64, 176), (4, 11)  # stride 16


def forward_camera(f: float = 100.0) -> np.ndarray:
    """(4, 4) img_from_ego of a camera at the ego origin looking along +x (u right = -y, v down = -z), principal
    point at the image centre: (x, y, z) projects to u = 87.5 - f y / x, v = 31.5 - f z / x at depth x."""
    k = np.array([[f, 0, (IMAGE_HW[1] - 1) / 2], [0, f, (IMAGE_HW[0] - 1) / 2], [0, 0, 1]])
    r = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], np.float64)
    m = np.eye(4)
    m[:3, :3] = k @ r
    return m.astype(np.float32)
