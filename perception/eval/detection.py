"""The minimal evaluation: Frames -> predictions -> nuScenes results JSON -> the devkit's DetectionEval.

The benchmarking CLI (``perception-test``) builds on ``evaluate_split``; NDS, mAP and the TP errors always come
from ``nuscenes.eval.detection.evaluate.DetectionEval``.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

RESULTS_META = {"use_camera": True, "use_lidar": False, "use_radar": True, "use_map": False, "use_external": False}
MAX_BOXES_PER_SAMPLE = 500


def results_json(boxes_by_token: dict[str, list[dict]], sample_tokens: Iterable[str],
                 meta: dict | None = None) -> dict:
    """The nuScenes results format: every sample of the split present (empty list if nothing detected), float
    scores, at most 500 boxes per sample (the highest scoring)."""
    results = {}
    for tok in sample_tokens:
        boxes = sorted(boxes_by_token.get(tok, []), key=lambda b: -float(b["detection_score"]))[:MAX_BOXES_PER_SAMPLE]
        results[tok] = [{**b, "sample_token": tok, "detection_score": float(b["detection_score"])} for b in boxes]
    return {"meta": dict(meta or RESULTS_META), "results": results}


class ResultsFormatError(ValueError):
    """A results file that the nuScenes devkit (or the evaluation server) would reject; names the file and why."""


def check_results_file(path: str | Path, sample_tokens: Iterable[str] | None = None) -> int:
    """Check a results JSON with the devkit's own loader (``nuscenes.eval.common.loaders.load_prediction`` with
    ``DetectionBox``: known class and attribute names, float scores without NaN, at most 500 boxes per sample),
    plus what the server checks beside it: a ``meta`` block with the five boolean ``use_*`` flags and, when
    ``sample_tokens`` is given, exactly those samples. Returns the number of boxes; raises ResultsFormatError."""
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    try:
        boxes, meta = load_prediction(str(path), MAX_BOXES_PER_SAMPLE, DetectionBox)
    except (AssertionError, KeyError, TypeError, ValueError) as err:
        raise ResultsFormatError(f"{path}: rejected by the nuScenes devkit's loader: {type(err).__name__}: {err}") from None
    bad = [k for k in RESULTS_META if not isinstance(meta.get(k) if isinstance(meta, dict) else None, bool)]
    if bad:
        raise ResultsFormatError(f"{path}: meta must carry the booleans {list(RESULTS_META)}; {bad} missing or "
                                 f"not boolean (meta: {meta})")
    if sample_tokens is not None:
        want, have = set(sample_tokens), set(boxes.sample_tokens)
        if want != have:
            missing, extra = sorted(want - have), sorted(have - want)
            raise ResultsFormatError(f"{path}: results must cover exactly the split's {len(want)} samples; "
                                     f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} extra (e.g. {extra[:2]})")
    return sum(len(boxes.boxes[t]) for t in boxes.sample_tokens)


def gt_boxes_as_results(nusc: Any, sample_tokens: Iterable[str]) -> dict[str, list[dict]]:
    """The oracle: GT boxes the devkit evaluates (num_lidar_pts + num_radar_pts > 0), as predictions with score 1.
    (GT without points is dropped by the devkit while predictions never are, so copying those would be false
    positives.)"""
    from nuscenes.eval.detection.utils import category_to_detection_name

    out = {}
    for tok in sample_tokens:
        boxes = []
        for ann_tok in nusc.get("sample", tok)["anns"]:
            ann = nusc.get("sample_annotation", ann_tok)
            name = category_to_detection_name(ann["category_name"])
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            vel = nusc.box_velocity(ann_tok)[:2]
            attr = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else ""
            boxes.append({"translation": list(ann["translation"]), "size": list(ann["size"]),
                          "rotation": list(ann["rotation"]),
                          "velocity": [float(v) if np.isfinite(v) else 0.0 for v in vel],
                          "detection_name": name, "detection_score": 1.0, "attribute_name": attr})
        out[tok] = boxes
    return out


def run_devkit(nusc: Any, results: dict, eval_set: str, out_dir: str | Path, verbose: bool = False,
               sample_tokens: Iterable[str] | None = None, render_curves: bool = False, progress: bool = True) -> dict:
    """Write ``results`` and score them with DetectionEval (config detection_cvpr_2019). Returns the devkit's
    metrics summary (as it writes metrics_summary.json) plus the paths written.

    ``sample_tokens``: score only these samples of the split (``--max-samples``): the devkit insists that
    predictions cover its whole split, so its GT loader is narrowed to the same samples for this call.
    ``progress=False`` also silences the devkit's own progress bar (its GT loader draws one on stderr always)."""
    import types

    from nuscenes.eval.common import loaders
    from nuscenes.eval.detection import evaluate as ev_mod
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    original_load_gt = ev_mod.load_gt
    original_custom = getattr(ev_mod, "get_samples_of_custom_split", None)
    if sample_tokens is not None:
        from nuscenes.eval.common.data_classes import EvalBoxes

        wanted = list(sample_tokens)

        def load_gt_subset(nusc_, eval_split, box_cls, verbose=False):
            boxes = original_load_gt(nusc_, eval_split, box_cls, verbose=verbose)
            subset = EvalBoxes()
            for tok in wanted:
                subset.add_boxes(tok, boxes[tok])
            return subset

        ev_mod.load_gt = load_gt_subset  # built-in splits
        if original_custom is not None:  # custom splits (splits.json): the devkit asks for the split's samples
            ev_mod.get_samples_of_custom_split = lambda split_name, nusc: list(wanted)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results_nusc.json"
    path.write_text(json.dumps(results))

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    original_tqdm = loaders.tqdm
    if not progress:
        import functools

        import tqdm as tqdm_mod

        loaders.tqdm = types.SimpleNamespace(tqdm=functools.partial(tqdm_mod.tqdm, disable=True))
    try:
        with quiet:  # the devkit prints its tables: kept quiet
            ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), eval_set, str(out_dir),
                               verbose=verbose)
            summary = ev.main(plot_examples=0, render_curves=render_curves)
    finally:
        loaders.tqdm = original_tqdm
        ev_mod.load_gt = original_load_gt
        if original_custom is not None:
            ev_mod.get_samples_of_custom_split = original_custom
    summary["results_path"] = str(path)
    return summary


def evaluate_split(predict: Callable[[Any], list[dict]], frames: Any, out_dir: str | Path,
                   progress: bool = False) -> dict:
    """Run ``predict(frame) -> nuScenes result boxes`` over every Frame of ``frames`` (a NuScenesFrames of the
    evaluated split) and score with the devkit. Returns the metrics summary."""
    boxes: dict[str, list[dict]] = {}
    it = range(len(frames))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="evaluate", unit="frame")
    for i in it:
        frame = frames[i]
        boxes[frame.sample_token] = predict(frame)
    tokens = [s.token for s in frames.samples]
    return run_devkit(frames.nusc, results_json(boxes, tokens), frames.split, out_dir)


def summary_line(summary: dict) -> str:
    tp = summary["tp_errors"]
    return (f"NDS {summary['nd_score']:.3f} mAP {summary['mean_ap']:.3f} mATE {tp['trans_err']:.3f} "
            f"mASE {tp['scale_err']:.3f} mAOE {tp['orient_err']:.3f} mAVE {tp['vel_err']:.3f} "
            f"mAAE {tp['attr_err']:.3f}")
