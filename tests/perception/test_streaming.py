"""The temporal state outside the graph: the choice of the previous state and its resets (StreamState), and the
state threaded through a sequence of frames by every runner: ONNX Runtime equals PyTorch on the raw head maps over
5 consecutive frames, and Pipeline.from_onnx equals Pipeline.from_checkpoint frame by frame."""
import numpy as np
import pytest
import torch

from perception.config import TemporalConfig
from perception.streaming import RESET_REASONS, StreamState, cur_from_prev

SHAPE = (2, 4, 4)
POLICY = TemporalConfig(enabled=True, max_gap_s=1.25, target_gap_s=0.5, gap_tolerance_s=0.25, history=16)


def _pose(x: float, yaw: float = 0.0) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    g = np.eye(4)
    g[:2, :2] = [[c, -s], [s, c]]
    g[0, 3] = x
    return g


def _run(st: StreamState, t0: int, scene: str = "a", x: float = 0.0) -> dict:
    arrays = st.inputs(scene, t0, _pose(x))
    st.push(t0, _pose(x), np.full(SHAPE, t0 / 1e6, np.float32))  # the state records its own time
    return arrays


def test_key_frames_take_the_previous_key_frame_and_resets_have_reasons():
    st = StreamState(POLICY, SHAPE)
    first = _run(st, 1_000_000)
    assert not first["prev_valid"][0] and st.last_reason == "stream_start"
    second = _run(st, 1_500_000, x=4.0)
    assert second["prev_valid"][0] and second["prev_dt"][0] == pytest.approx(0.5)
    assert second["prev_bev"][0, 0, 0, 0] == pytest.approx(1.0)  # the state of t0 = 1.0 s
    np.testing.assert_allclose(second["cur_from_prev"][0][:3, 3], [-4.0, 0.0, 0.0], atol=1e-6)  # ego moved +4 m
    assert not _run(st, 1_400_000)["prev_valid"][0] and st.last_reason == "time_backwards"
    assert not _run(st, 1_900_000, scene="b")["prev_valid"][0] and st.last_reason == "new_scene"
    assert _run(st, 2_400_000, scene="b")["prev_valid"][0]
    assert not _run(st, 4_000_000, scene="b")["prev_valid"][0] and st.last_reason == "gap_above_max"
    assert st.counts() == {"warm": 2, "resets": {"gap_above_max": 1, "new_scene": 1, "stream_start": 1,
                                                 "time_backwards": 1}}
    assert set(st.resets) <= set(RESET_REASONS)


def test_no_history_makes_every_frame_cold_with_its_own_reason():
    st = StreamState(POLICY, SHAPE, no_history=True)
    for k in range(4):  # key frames 0.5 s apart: each would be warm with history
        arrays = _run(st, 1_000_000 + 500_000 * k)
        assert not arrays["prev_valid"][0] and not arrays["prev_bev"].any()
    assert st.counts() == {"warm": 0, "resets": {"no_history": 3, "stream_start": 1}}
    assert set(st.resets) <= set(RESET_REASONS)


def test_at_camera_rate_the_state_nearest_to_the_target_gap_is_taken():
    """83 ms frames: frames 0-3 (ages up to 0.249999 s) have no state within 0.25 s of 0.5 s (cold starts); then
    the frame nearest to 0.5 s back."""
    st = StreamState(POLICY, SHAPE)
    period = 83_333
    got = []
    for k in range(14):
        a = _run(st, 10_000_000 + k * period)
        got.append((bool(a["prev_valid"][0]), float(a["prev_dt"][0])))
    assert [v for v, _ in got[:4]] == [False] * 4 and st.resets == {"stream_start": 1, "no_state_near_gap": 3}
    assert all(v for v, _ in got[4:])
    assert all(abs(dt - 0.5) <= period / 2e6 + 1e-6 for _, dt in got[6:])
    # a hole around the target time (frames dropped): no state near 0.5 s, a cold start with its reason
    st2 = StreamState(POLICY, SHAPE)
    _run(st2, 0)
    _run(st2, 1_100_000)
    assert not _run(st2, 1_200_000)["prev_valid"][0] and st2.last_reason == "no_state_near_gap"


def test_cur_from_prev_maps_previous_ego_points_into_the_current_frame():
    prev, cur = _pose(10.0, 0.3), _pose(12.0, 0.5)
    p_prev = np.array([3.0, -1.0, 0.0, 1.0])
    want = np.linalg.inv(cur) @ prev @ p_prev
    np.testing.assert_allclose(cur_from_prev(cur, prev) @ p_prev, want, atol=1e-5)


# -- the state through every runner --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def temporal_export(tmp_path_factory):
    """The small temporal network (non-trivial BatchNorm statistics, a fusion layer that is not the identity), its
    checkpoint, and its perception-export folder."""
    from export.cli import main as export_main
    from perception.train.checkpoint import save_checkpoint
    from small_model import small_config, small_net

    cfg = small_config("model.temporal.enabled=true")
    net = small_net(cfg)
    root = tmp_path_factory.mktemp("temporal_onnx")
    save_checkpoint(root / "t.pt", net, cfg)
    assert export_main(["--checkpoint", str(root / "t.pt"), "--out", str(root / "onnx")]) == 0
    return cfg, net, root


@pytest.fixture(scope="module")
def sequence(temporal_export, synth_root):
    """5 consecutive key frames of one synth_val scene."""
    from perception.data.nuscenes import NuScenesFrames
    from perception.data.synthetic.generate import VERSION

    frames = NuScenesFrames(temporal_export[0], synth_root, VERSION, "synth_val")
    seq = [frames[i] for i in range(5)]
    assert len({f.scene_token for f in seq}) == 1 and all(np.diff([f.t0 for f in seq]) > 0)
    return seq


def test_onnxruntime_threads_the_state_like_pytorch_on_the_raw_heads(temporal_export, sequence, tmp_path):
    """5 frames, each backend carrying its own state: every raw head map within 1e-4 (absolute) of PyTorch, and
    the state actually used (frames 2-5 warm, their maps differ from a cold start)."""
    import onnxruntime as ort

    from export.budget import check_budget
    from export.onnx import export_onnx, graph_output_names
    from perception.data.batch import PillarSpec, input_arrays
    from perception.streaming import cold_start_arrays

    cfg, net, _ = temporal_export
    spec = PillarSpec.from_config(cfg)
    batches = [input_arrays([f], spec) for f in sequence]
    shape = net.state_shape
    example = {**batches[0], **cold_start_arrays(shape)}
    path = export_onnx(net, [torch.from_numpy(example[k]) for k in net.input_names], tmp_path / "raw.onnx", raw=True)
    import onnx

    check_budget(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = list(graph_output_names(net, raw=True))
    st_torch, st_ort = StreamState(cfg.model.temporal, shape), StreamState(cfg.model.temporal, shape)
    worst = 0.0
    for k, (frame, b) in enumerate(zip(sequence, batches)):
        a_t = {**b, **st_torch.inputs(frame.scene_token, frame.t0, frame.global_from_ego)}
        a_o = {**b, **st_ort.inputs(frame.scene_token, frame.t0, frame.global_from_ego)}
        with torch.no_grad():
            ref = {n: v.numpy() for n, v in net(*[torch.from_numpy(a_t[n]) for n in net.input_names]).items()}
            cold = net(*[torch.from_numpy(b[n]) for n in net.input_names[:9]])["heatmap"].numpy()
        got = dict(zip(names, sess.run(names, a_o)))
        for n in names:
            err = float(np.abs(got[n] - ref[n]).max())
            worst = max(worst, err)
            assert err <= 1e-4, f"frame {k} {n}: max |ORT - PyTorch| {err:.3g}"
        if k > 0:
            assert a_o["prev_valid"][0] and np.abs(ref["heatmap"] - cold).max() > 1e-4
        st_torch.push(frame.t0, frame.global_from_ego, ref["bev_state"][0])
        st_ort.push(frame.t0, frame.global_from_ego, got["bev_state"][0])
    assert st_ort.counts() == {"warm": 4, "resets": {"stream_start": 1}}


def test_pipeline_from_onnx_equals_from_checkpoint_over_a_sequence(temporal_export, sequence):
    """perception-export's folder (model.json lists the state inputs/outputs) run by Pipeline.from_onnx, the state
    kept by the Pipeline: the same detections as the checkpoint's Pipeline, frame by frame."""
    import json

    from perception.pipeline import Pipeline

    cfg, _, root = temporal_export
    meta = json.loads((root / "onnx" / "model.json").read_text())
    assert meta["temporal"]["state_output"] == "bev_state"
    assert [i["name"] for i in meta["inputs"]][-4:] == ["prev_bev", "cur_from_prev", "prev_dt", "prev_valid"]
    ref, onnx_pipe = Pipeline.from_checkpoint(root / "t.pt", score_threshold=0.0), \
        Pipeline.from_onnx(root / "onnx", score_threshold=0.0)
    for frame in sequence:
        a, b = ref.infer(frame), onnx_pipe.infer(frame)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        strong = a.scores > 0.1
        np.testing.assert_allclose(a.boxes[strong][:, :6], b.boxes[strong][:, :6], atol=1e-3)
        assert a.temporal == b.temporal
    assert ref.temporal_counts() == onnx_pipe.temporal_counts() == {"warm": 4, "resets": {"stream_start": 1}}


def test_a_single_frame_export_is_unchanged(small_onnx_export):
    """With model.temporal off (the default): no state inputs or outputs, model.json's temporal is null."""
    import json

    meta = json.loads((small_onnx_export / "model.json").read_text())
    assert meta["temporal"] is None
    assert [i["name"] for i in meta["inputs"]][-1] == "pillar_mask"
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "labels", "trajectories", "mode_probs"]


@pytest.mark.slow
def test_a_temporal_graph_quantizes_with_real_states_and_runs_with_its_state(temporal_export, synth_root,
                                                                               tmp_path):
    """INT8 Q/DQ of a temporal export: calibrated on frames whose state comes from the FP32 graph; the Q/DQ graph
    stays in the budget and runs a sequence with the state threaded, close to FP32."""
    import shutil

    import onnx

    from export.budget import check_budget
    from export.quantize import quantize_int8
    from perception.data.nuscenes import NuScenesFrames
    from perception.data.synthetic.generate import VERSION
    from perception.pipeline import Pipeline

    cfg, _, root = temporal_export
    folder = tmp_path / "onnx"
    shutil.copytree(root / "onnx", folder)
    frames = NuScenesFrames(cfg, synth_root, VERSION, "synth_val")
    path = quantize_int8(folder, frames, calib_frames=3)
    assert check_budget(onnx.load(str(path))).get("QuantizeLinear", 0) > 0
    fp32, int8 = Pipeline.from_onnx(folder, score_threshold=0.0), \
        Pipeline.from_onnx(folder, score_threshold=0.0, model_file="model_int8.onnx")
    for i in range(3):
        a, b = fp32.infer(frames[i]), int8.infer(frames[i])
        assert b.temporal["warm"] == (i > 0)
        assert np.abs(a.scores - b.scores).max() < 0.05
