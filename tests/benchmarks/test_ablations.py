"""benchmarks/ablations.py orchestration, cheaply: the plan, the resumable state (the subprocess runner mocked)
and the targets table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import ablations as A


def _settings(tmp_path: Path, **kw) -> A.Settings:
    return A.Settings(steps=kw.pop("steps", 5), dataroot=str(tmp_path / "mono"),
                      stereo_dataroot=str(tmp_path / "stereo"), scenes=3, samples_per_scene=4, **kw)


def _write_root(root: Path, rig: str, seed: int = 0, scenes: int = 3, samples: int = 4) -> None:
    v = root / A.VERSION
    v.mkdir(parents=True)
    (v / "generator.json").write_text(json.dumps({"seed": seed, "scenes": scenes, "samples_per_scene": samples,
                                                  "image_scale": 0.5, "keyframes_only": True, "rig": rig}))
    (v / "scene.json").write_text(json.dumps([{"token": "sc", "name": "scene-0000"}]))
    (v / "sample.json").write_text(json.dumps([{"token": "s0", "scene_token": "sc"}]))
    (v / "sample_annotation.json").write_text(json.dumps([
        {"sample_token": "s0", "instance_token": "i0", "translation": [1.0, 2.0, 0.5], "size": [2.0, 4.0, 1.5]}]))


def _metrics(nds: float, mAP: float = 0.3, mate: float = 0.5, mave: float = 0.5) -> dict:
    return {"NDS": nds, "mAP": mAP, "mATE": mate, "mASE": 0.25, "mAOE": 0.9, "mAVE": mave, "mAAE": 0.05}


class FakeRunner:
    """Stands in for the subprocesses: writes what perception-train / perception-test would, or fails."""

    def __init__(self, fail: set[str] = frozenset(), nds: dict[str, float] | None = None):
        self.calls: list[list[str]] = []
        self.fail = set(fail)
        self.nds = nds or {}
        self.state_at_call: list[dict] = []
        self.state_path: Path | None = None

    def __call__(self, cmd, log: Path, env: dict) -> int:
        assert env["GLIBC_TUNABLES"] == A.GLIBC_TUNABLES
        self.calls.append(list(cmd))
        if self.state_path is not None and self.state_path.exists():
            self.state_at_call.append(json.loads(self.state_path.read_text()))
        log.parent.mkdir(parents=True, exist_ok=True)
        out = A._abs(cmd[cmd.index("--out") + 1])
        variant = out.parent.name
        if variant in self.fail:
            log.write_text("Traceback ...\nerror: DatasetError: something broke\n")
            return 1
        out.mkdir(parents=True, exist_ok=True)
        if cmd[2] == "perception.cli.train":
            steps = int(next(s.split("=")[1] for s in cmd if s.startswith("train.steps=")))
            (out / "model.pt").write_bytes(b"weights")
            (out / "summary.json").write_text(json.dumps({"steps": steps, "minutes": 0.1, "config_hash": "c"}))
        else:
            (out / "metrics_summary.json").write_text(json.dumps({
                "nd_score": self.nds.get(variant, 0.4), "mean_ap": 0.3, "tp_errors": {
                    "trans_err": 0.5, "scale_err": 0.25, "orient_err": 0.9, "vel_err": 0.5, "attr_err": 0.05}}))
            (out / "trajectory_metrics.json").write_text(json.dumps({
                "model": {"car": {"minADE_6": 1.2, "matched": 10}}, "constant_velocity": {"car": {"minADE_6": 1.5}}}))
        return 0


def _ablations(tmp_path: Path, runner, only=None, settings=None, published=None) -> A.Ablations:
    settings = settings or _settings(tmp_path)
    out = tmp_path / "out" / "ablations"
    state = A.State(tmp_path / "state.json", settings)
    plan = A.build_plan(settings, out, only)
    pub = (lambda ab: published.append(A.markdown(ab.settings, ab.state.steps))) if published is not None else None
    return A.Ablations(settings, state, out, plan, runner=runner, publisher=pub, echo=lambda s: None, only=only)


# -- the plan -----------------------------------------------------------------------------------------------------

def test_plan_has_every_variant_with_its_commands(tmp_path):
    settings = _settings(tmp_path, steps=700)
    plan = A.build_plan(settings, tmp_path / "out")
    keys = [s.key for s in plan]
    assert keys[:3] == ["data:mono", "train:main", "eval:main"]
    trains = [k.split(":")[1] for k in keys if k.startswith("train:")]
    assert sorted(trains) == sorted(v.name for v in A.TRAIN_VARIANTS)
    evals = {k.split(":")[1] for k in keys if k.startswith("eval:")}
    assert evals == set(A.ALL_NAMES) - {"calib_0"}  # calibration noise 0 is the main evaluation itself
    by = {s.key: s for s in plan}
    for s in plan:  # dependencies come earlier
        assert all(keys.index(d) < keys.index(s.key) for d in s.deps)
    assert "train.steps=700" in by["train:camera_only"].cmd
    assert "model.radar.enabled=false" in by["train:camera_only"].cmd
    assert "model.camera.enabled=false" in by["train:radar_only"].cmd
    assert "model.fusion.kind=conv" in by["train:conv_fusion"].cmd
    assert "train.seed=1" in by["train:main_seed1"].cmd
    # sync off: trained and tested without sync
    assert "data.sync.enabled=false" in by["train:sync_off"].cmd
    assert "data.sync.enabled=false" in by["eval:sync_off"].cmd
    # stereo: its config on the stereo root, the same world (seed, scenes, samples) as the mono root
    st = by["train:stereo"].cmd
    assert A.STEREO_CONFIG in st and A._rel(settings.root(True)) in st
    assert by["train:stereo"].deps == ("data:stereo",)
    mono, stereo = by["data:mono"].cmd, by["data:stereo"].cmd
    assert "--rig" in stereo and A.STEREO_RIG in stereo and "--rig" not in mono
    for flag in ("--seed", "--scenes", "--samples-per-scene", "--image-scale"):
        assert mono[mono.index(flag) + 1] == stereo[stereo.index(flag) + 1]
    assert by["check:same_world"].deps == ("data:mono", "data:stereo")
    # test-time variants of main
    for name in ("calib_0.5", "calib_1", "calib_2", "drop_cam_front", "drop_all_cameras", "drop_radar_front",
                 "drop_all_radar"):
        s = by[f"eval:{name}"]
        assert s.deps == ("train:main",)
        assert s.cmd[s.cmd.index("--checkpoint") + 1].endswith("main/run/model.pt")
    assert by["eval:calib_2"].cmd[-2:] == ["--calib-noise-deg", "2"]
    drop = lambda k: by[k].cmd[by[k].cmd.index("--drop-sensors") + 1].split(",")
    assert drop("eval:drop_cam_front") == ["CAM_FRONT"]
    assert sorted(drop("eval:drop_all_cameras")) == sorted(A.CAMERAS) and len(A.CAMERAS) == 6
    assert drop("eval:drop_radar_front") == ["RADAR_FRONT"]
    assert sorted(drop("eval:drop_all_radar")) == sorted(A.RADARS) and len(A.RADARS) == 5


def test_rig_channel_names_match_the_drop_lists():
    import yaml

    rig = yaml.safe_load((A.REPO / A.MONO_RIG).read_text())
    assert set(rig["cameras"]) == set(A.CAMERAS)
    assert set(rig["radars"]) == set(A.RADARS)


def test_only_adds_what_is_needed_and_rejects_unknown_names(tmp_path):
    plan = A.build_plan(_settings(tmp_path), tmp_path / "out", ["drop_all_radar"])
    assert [s.key for s in plan] == ["data:mono", "train:main", "eval:main", "eval:drop_all_radar"]
    plan = A.build_plan(_settings(tmp_path), tmp_path / "out", ["stereo"])
    assert [s.key for s in plan] == ["data:mono", "data:stereo", "check:same_world", "train:stereo", "eval:stereo"]
    with pytest.raises(SystemExit, match="unknown variant"):
        A.build_plan(_settings(tmp_path), tmp_path / "out", ["mian"])


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    runner = FakeRunner()
    ab = _ablations(tmp_path, runner, only=["main", "calib_0"])
    ab.echo = print
    ab.dry_run()
    out = capsys.readouterr().out
    assert "[to generate] data:mono" in out and "[pending] train:main" in out and "perception.cli.test" in out
    assert "calib_0" in out and runner.calls == [] and not (tmp_path / "state.json").exists()


# -- the state: resume, failures ------------------------------------------------------------------------------------

def test_run_records_steps_skips_finished_ones_and_goes_on_after_a_failure(tmp_path):
    _write_root(tmp_path / "mono", "nuscenes")
    published: list[str] = []
    runner = FakeRunner(fail={"camera_only"}, nds={"main": 0.55, "radar_only": 0.30})
    runner.state_path = tmp_path / "state.json"
    ab = _ablations(tmp_path, runner, only=["main", "camera_only", "radar_only"], published=published)
    bad = ab.run()
    assert bad == 2  # train:camera_only failed, eval:camera_only blocked; radar_only still ran
    st = json.loads((tmp_path / "state.json").read_text())
    steps = st["steps"]
    assert steps["data:mono"]["status"] == "done" and steps["data:mono"]["generated"] is False
    assert steps["train:main"]["status"] == "done" and steps["train:main"]["checkpoint"].endswith("main/run/model.pt")
    assert steps["train:main"]["wall_s"] >= 0 and steps["train:main"]["steps"] == 5
    assert steps["eval:main"]["metrics"]["NDS"] == 0.55 and steps["eval:main"]["metrics"]["car_minADE6"] == 1.2
    assert steps["train:camera_only"]["status"] == "failed"
    assert "DatasetError: something broke" in steps["train:camera_only"]["error"]
    assert steps["eval:camera_only"]["status"] == "blocked"
    assert steps["eval:radar_only"]["status"] == "done"
    # the state on disk was up to date before every later step (atomic write after each step)
    at_radar_train = runner.state_at_call[3]  # calls: train main, eval main, train camera_only, train radar_only
    assert at_radar_train["steps"]["train:radar_only"]["status"] == "running"
    assert at_radar_train["steps"]["train:camera_only"]["status"] == "failed"
    assert at_radar_train["steps"]["eval:camera_only"]["status"] == "blocked"
    # published after every step, partial results visible
    assert len(published) == len(ab.plan)
    assert "| camera_only |" in published[-1] and "failed (train)" in published[-1]
    assert "**0.550**" in published[-1]

    # rerun: finished steps are skipped, the failed training (and what needs it) is retried
    runner2 = FakeRunner(nds={"camera_only": 0.40})
    ab2 = _ablations(tmp_path, runner2, only=["main", "camera_only", "radar_only"])
    assert ab2.run() == 0
    assert [c[c.index("--out") + 1].split("/")[-2] for c in runner2.calls] == ["camera_only", "camera_only"]
    steps = json.loads((tmp_path / "state.json").read_text())["steps"]
    assert steps["eval:camera_only"]["metrics"]["NDS"] == 0.40
    assert steps["eval:main"]["metrics"]["NDS"] == 0.55  # untouched


def test_interrupted_training_resumes_from_its_last_checkpoint(tmp_path):
    _write_root(tmp_path / "mono", "nuscenes")
    settings = _settings(tmp_path)
    run_dir = tmp_path / "out" / "ablations" / "main" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"step 3")
    state = A.State(tmp_path / "state.json", settings)
    state.put("data:mono", {"status": "done"})
    state.put("train:main", {"status": "running", "started_ts": (run_dir / "last.pt").stat().st_mtime - 60.0,
                             "attempts": []})  # the orchestrator was killed mid-training
    runner = FakeRunner()
    ab = _ablations(tmp_path, runner, only=["main"], settings=settings)
    assert ab.run() == 0
    assert runner.calls[0][2] == "perception.cli.train" and "--resume" in runner.calls[0]
    rec = ab.state.get("train:main")
    assert rec["status"] == "done" and len(rec["attempts"]) == 2 and rec["attempts"][0]["interrupted"]
    assert rec["attempts"][0]["wall_s"] == pytest.approx(60.0, abs=1.0)  # counted up to its last checkpoint
    assert rec["wall_s"] >= 60.0


def test_an_interruption_stops_the_run_and_leaves_a_resumable_state(tmp_path):
    _write_root(tmp_path / "mono", "nuscenes")

    def runner(cmd, log, env):
        out = A._abs(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "last.pt").write_bytes(b"step 100")
        raise A.Interrupted("signal 15")

    ab = _ablations(tmp_path, runner, only=["main"])
    with pytest.raises(A.Interrupted):
        ab.run()
    rec = json.loads((tmp_path / "state.json").read_text())["steps"]["train:main"]
    assert rec["status"] == "interrupted" and rec["attempts"][0]["interrupted"]
    runner2 = FakeRunner()
    assert _ablations(tmp_path, runner2, only=["main"]).run() == 0
    assert "--resume" in runner2.calls[0]


def test_command_line_reproduces_the_settings(tmp_path):
    s = A.Settings(steps=2, dataroot="/tmp/a", stereo_dataroot="/tmp/b", scenes=3, image_scale=0.25,
                   extra_sets=("data.image_size=[64, 176]",))
    line = A.command_line(s)
    assert line == ("python -m benchmarks.ablations --dataroot /tmp/a --stereo-dataroot /tmp/b --steps 2 --scenes 3 "
                    "--image-scale 0.25 --set 'data.image_size=[64, 176]'")
    args = A.build_parser().parse_args(__import__("shlex").split(line)[3:])
    assert (args.steps, args.scenes, args.image_scale, args.extra_sets) == (2, 3, 0.25, ["data.image_size=[64, 176]"])


def test_a_run_folder_unknown_to_the_state_is_moved_aside_not_resumed(tmp_path):
    _write_root(tmp_path / "mono", "nuscenes")
    run_dir = tmp_path / "out" / "ablations" / "main" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"someone else's")
    runner = FakeRunner()
    ab = _ablations(tmp_path, runner, only=["main"])
    assert ab.run() == 0
    assert "--resume" not in runner.calls[0]
    assert list(run_dir.parent.glob("run.stale-*"))


def test_state_belongs_to_its_settings(tmp_path):
    A.State(tmp_path / "state.json", _settings(tmp_path, steps=5)).put("x", {"status": "done"})
    assert A.State(tmp_path / "state.json", _settings(tmp_path, steps=5)).done("x")
    with pytest.raises(A.StateError, match="other settings"):
        A.State(tmp_path / "state.json", _settings(tmp_path, steps=700))


def test_dataset_of_other_arguments_is_an_error_not_overwritten(tmp_path):
    _write_root(tmp_path / "mono", "nuscenes", seed=1)
    runner = FakeRunner()
    ab = _ablations(tmp_path, runner, only=["main"])
    assert ab.run() == 3  # data failed; train and eval blocked
    rec = ab.state.get("data:mono")
    assert rec["status"] == "failed" and "seed=1 (need 0)" in rec["error"] and runner.calls == []


def test_missing_datasets_are_generated_and_the_worlds_compared(tmp_path):
    calls = []

    def runner(cmd, log, env):
        calls.append(cmd)
        if cmd[2] == "perception.cli.synth":
            _write_root(A._abs(cmd[cmd.index("--out") + 1]),
                        "stereo_radar" if "--rig" in cmd else "nuscenes")
            return 0
        return FakeRunner()(cmd, log, env)

    ab = _ablations(tmp_path, runner, only=["stereo"])
    assert ab.run() == 0
    assert [c[2] for c in calls[:2]] == ["perception.cli.synth", "perception.cli.synth"]
    assert ab.state.get("check:same_world")["same"] is True
    md = A.markdown(ab.settings, ab.state.steps)
    assert "match in every scene" in md
    # the mono counterpart (main) is not in this run: the stereo target waits for it
    assert "| Stereo rig beats mono rig on mATE | stereo mATE 0.500; waiting for main |" in md


# -- the targets table ---------------------------------------------------------------------------------------------

def _targets(res: dict) -> dict[str, list[str]]:
    full = {n: None for n in A.ALL_NAMES}
    full.update(res)
    return {r[0]: r for r in A.target_rows(full)}


def test_targets_met():
    t = _targets({"main": _metrics(0.55, mate=0.40, mave=0.30), "main_seed1": _metrics(0.53),
                  "camera_only": _metrics(0.40, mave=0.60), "radar_only": _metrics(0.30),
                  "conv_fusion": _metrics(0.50), "sync_off": _metrics(0.50), "stereo": _metrics(0.56, mate=0.35),
                  "drop_cam_front": _metrics(0.52), "drop_all_radar": _metrics(0.25, mAP=0.2)})
    assert all(r[3] == "**met**" for k, r in t.items() if k != "Main model over 2 seeds"), t
    seeds = t["Main model over 2 seeds"]
    assert seeds[3] == "reported" and "0.540 +/- 0.010" in seeds[1]


def test_targets_missed_at_the_boundaries():
    t = _targets({"main": _metrics(0.50, mate=0.40, mave=0.40), "camera_only": _metrics(0.41, mave=0.60),
                  "radar_only": _metrics(0.39), "conv_fusion": _metrics(0.50), "sync_off": _metrics(0.48),
                  "stereo": _metrics(0.5, mate=0.40), "drop_cam_front": _metrics(0.45),
                  "drop_all_radar": _metrics(0.25, mAP=0.05)})
    assert t["Fusion beats camera only"][3] == "**missed**"  # +0.09
    assert t["Fusion beats radar only"][3] == "**met**"  # +0.11
    assert t["Radar improves velocity (mAVE)"][3] == "**missed**"  # ratio 0.67
    assert t["Cross-attention beats conv fusion"][3] == "**missed**"  # a tie is not a win
    assert t["Sync on beats sync off"][3] == "**missed**"  # +0.02
    assert t["Stereo rig beats mono rig on mATE"][3] == "**missed**"  # equal
    assert t["One camera dropped (CAM_FRONT)"][3] == "**missed**"  # costs 0.05
    # 0.25 >= 0.5 x 0.41 but mAP 0.05 < 0.10: not a working detector
    assert t["All radar dropped: a working camera-only detector"][3] == "**missed**"


def test_targets_pending_until_every_figure_is_there():
    t = _targets({"main": _metrics(0.55)})
    assert all(r[3] == "pending" for r in t.values())
    assert "waiting for camera_only" in t["Fusion beats camera only"][1]
    assert "main NDS 0.550" in t["Fusion beats camera only"][1]


def test_variant_table_shows_pending_and_calib_0_as_main(tmp_path):
    steps = {"train:main": {"status": "done", "wall_s": 900.0},
             "eval:main": {"status": "done", "wall_s": 120.0, "metrics": {**_metrics(0.55), "car_minADE6": 1.1}},
             "train:camera_only": {"status": "failed", "error": "exit 1: boom"}}
    rows = {r[0]: r for r in A.variant_rows(steps)}
    assert rows["main"][3] == "**0.550**" and rows["main"][8] == "1.100" and rows["main"][9] == "15.0"
    assert rows["calib_0"][2] == "done (= main)" and rows["calib_0"][3] == "**0.550**"
    assert rows["camera_only"][2] == "failed (train)" and rows["radar_only"][2] == "pending"
    assert rows["calib_1"][2] == "pending" and rows["calib_1"][9] == "(main)"
    md = A.markdown(_settings(tmp_path, steps=700), steps)
    assert "700 steps x batch 4" in md and "`train:camera_only`: exit 1: boom" in md


def test_publish_writes_only_the_given_benchmarks_file(tmp_path):
    from benchmarks import report

    md_file = tmp_path / "BENCHMARKS.md"
    md_file.write_text("# Benchmarks\n")
    before = report.BENCHMARKS_MD
    ab = _ablations(tmp_path, FakeRunner())
    A.publish_to(md_file, tmp_path / "json")(ab)
    assert report.BENCHMARKS_MD == before
    text = md_file.read_text()
    assert "<!-- bench:ablations -->" in text and "pending" in text
    assert json.loads((tmp_path / "json" / "ablations.json").read_text())["settings"]["steps"] == 5
