"""benchmarks/ablations.py, cheaply: the rows, the loop with the children mocked (a fake subprocess.run writes what
perception-train / perception-test would), resume / skip / fail / blocked, the world check, adoption of an
existing out-dir, the target rules at their boundaries and the table with pending rows."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import yaml

from benchmarks import ablations as A
from benchmarks import report


def _world(root: Path, stereo: bool = False, **changes) -> Path:
    (root / A.VERSION).mkdir(parents=True)
    gen = {"schema": "synth-generator/1", **A.WORLD, "rig": "stereo_radar" if stereo else "nuscenes", **changes}
    (root / A.VERSION / "generator.json").write_text(json.dumps(gen))
    return root


def _metrics_files(test: Path, nds: float) -> None:
    test.mkdir(parents=True, exist_ok=True)
    (test / "metrics_summary.json").write_text(json.dumps({
        "nd_score": nds, "mean_ap": nds / 2, "tp_errors": {"trans_err": 0.5, "vel_err": 0.6},
        "mean_dist_aps": {"car": 0.4, "pedestrian": 0.1, "bicycle": 0.05, "traffic_cone": 0.02, "truck": 0.3}}))
    (test / "depth_metrics.json").write_text(json.dumps({
        "all": {"abs_rel": 0.3, "delta1": 0.6, "cells": 10}, "in_boxes": {"abs_rel": 0.2, "delta1": 0.7, "cells": 4},
        "per_camera": {"CAM_FRONT_L": {"abs_rel": 0.1, "delta1": 0.9, "cells": 1},
                       "CAM_BACK_R": {"abs_rel": 0.4, "delta1": 0.5, "cells": 3},
                       "CAM_LEFT": {"abs_rel": 9.0, "delta1": 0.0, "cells": 100}}}))
    (test / "trajectory_metrics.json").write_text(json.dumps({
        "model": {"car": {"minADE_1": 1.0, "minADE_6": 0.7}},
        "constant_velocity": {"car": {"minADE_1": 1.2, "minADE_6": 1.0}}}))


class FakeChildren:
    """Stands in for subprocess.run: writes what the CLIs would write, or fails with an error line for the
    (row, step) pairs in ``fail`` (step: 'train' or 'test')."""

    def __init__(self, fail=(), nds: dict[str, float] | None = None):
        self.calls: list[list[str]] = []
        self.fail = set(fail)
        self.nds = nds or {}

    def __call__(self, cmd, cwd, stdout, stderr, env):
        assert cwd == A.REPO and stderr == subprocess.STDOUT
        assert env["GLIBC_TUNABLES"] == A.GLIBC_TUNABLES
        self.calls.append(list(cmd))
        out = A.REPO / cmd[cmd.index("--out") + 1]
        row, kind = out.parent.name, ("train" if cmd[2] == "perception.cli.train" else "test")
        if (row, kind) in self.fail:
            stdout.write("Traceback (most recent call last):\nerror: DatasetError: something broke\n")
            return subprocess.CompletedProcess(cmd, 1)
        out.mkdir(parents=True, exist_ok=True)
        if kind == "train":
            (out / ("backbone.pt" if "backbone" in cmd else "model.pt")).write_bytes(b"weights")
            steps = int(next(s.split("=")[1] for s in cmd if s.startswith("train.steps=")))
            (out / "summary.json").write_text(json.dumps({"steps": steps, "minutes": 2.5}))
        else:
            _metrics_files(out, self.nds.get(row, 0.4))
        return subprocess.CompletedProcess(cmd, 0)

    def rows(self, kind: str) -> list[str]:
        return [Path(c[c.index("--out") + 1]).parent.name for c in self.calls
                if (c[2] == "perception.cli.train") == (kind == "train")]


def _children(monkeypatch, fake) -> None:
    """The driver's subprocess module, and only its, replaced (report.machine() still runs git)."""
    monkeypatch.setattr(A, "subprocess", types.SimpleNamespace(run=fake, STDOUT=subprocess.STDOUT))


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """Worlds, an out dir and a BENCHMARKS.md in tmp_path; ``bench.run(args, children)`` calls main()."""
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    monkeypatch.setattr(report, "BENCHMARKS_MD", md)
    monkeypatch.setattr(A, "LEDGER", tmp_path / "ablations_results.json")  # never the committed ledger

    class Bench:
        out = tmp_path / "out" / "ablations"
        mono = _world(tmp_path / "synth")
        stereo = _world(tmp_path / "synth_stereo", stereo=True)
        benchmarks_md = md

        def run(self, args: list[str], children: FakeChildren | None = None) -> int:
            _children(monkeypatch, children or FakeChildren())
            return A.main(["--dataroot", str(self.mono), "--stereo-dataroot", str(self.stereo), "--out-dir",
                           str(self.out)] + args)

        def status(self, name: str) -> str:
            return A.status(A.BY_NAME[name], self.out)

    return Bench()


# -- the rows -----------------------------------------------------------------------------------------------------

def test_rows_are_well_formed():
    names = [r.name for r in A.ROWS]
    assert len(names) == len(set(names))
    for i, row in enumerate(A.ROWS):
        assert all(names.index(d) < i for d in row.deps), f"{row.name} needs a later row"
        assert not (row.test_of and row.checkpoint)
        assert row.trains or not (row.sets or row.pretrain)
    grouped = {n for _, rows in A.GROUPS.values() for n in rows}
    assert grouped <= set(names) and set(names) <= grouped  # every row shows in some group table
    for row in A.ROWS:
        if row.trains and row.config != A.TEMPORAL:
            assert (A.REPO / row.config).exists(), row.config
    rig = yaml.safe_load((A.REPO / "configs/rigs/nuscenes.yaml").read_text())
    assert set(rig["cameras"]) == set(A.CAMERAS) and set(rig["radars"]) == set(A.RADARS)
    stereo = yaml.safe_load((A.REPO / A.STEREO_RIG).read_text())
    assert {c for p in stereo["stereo_pairs"] for c in p.values()} == set(A.STEREO_CAMERAS)


def test_the_issue_21_rows_keep_the_names_and_overrides_of_bench_cameras():
    """So that --out-dir benchmarks/out/cameras adopts what the coordinator's queue trained there."""
    b = A.BY_NAME
    assert b["cam_base"].sets == ("model.radar.enabled=false",)
    assert b["cam_depth"].sets == ("model.radar.enabled=false", "train.depth_loss.enabled=true")
    assert b["cam_depth_persp"].sets == b["cam_depth"].sets + ("train.perspective.enabled=true",)
    assert b["backbone_pre"].pretrain and b["backbone_pre"].sets == ("model.radar.enabled=false",)
    assert b["cam_depth_persp_pre"].needs == ("backbone_pre",)
    roots = {False: "D", True: "DS"}
    cmd = A.train_cmd(b["cam_depth_persp_pre"], A.REPO / "benchmarks/out/cameras", roots)
    assert "model.camera.pretrained=benchmarks/out/cameras/backbone_pre/run/backbone.pt" in cmd  # the queue's string
    for name in ("cam_base", "cam_depth", "cam_depth_persp", "backbone_pre", "cam_depth_persp_pre"):
        assert b[name].config == A.MONO and b[name].steps == 700 and not b[name].stereo


def test_commands(tmp_path):
    roots, out = {False: "D", True: "DS"}, tmp_path / "out"
    cmd = A.train_cmd(A.BY_NAME["main"], out, roots)
    assert cmd[1:4] == ["-m", "perception.cli.train", A.MONO]
    assert cmd[cmd.index("--dataroot") + 1] == "D" and "--no-eval" in cmd and "--resume" not in cmd
    assert "train.steps=700" in cmd and "train.checkpoint_every=100" in cmd
    (out / "main" / "run").mkdir(parents=True)
    (out / "main" / "run" / "last.pt").write_bytes(b"x")
    assert A.train_cmd(A.BY_NAME["main"], out, roots)[-1] == "--resume"
    pre = A.train_cmd(A.BY_NAME["backbone_pre"], out, roots)
    assert pre[pre.index("--stage") + 1] == "backbone" and "--overwrite" in pre and "--resume" not in pre
    st = A.train_cmd(A.BY_NAME["stereo_cv_off"], out, roots)
    assert A.STEREO in st and st[st.index("--dataroot") + 1] == "DS" and "model.camera.stereo.enabled=false" in st
    assert "train.steps=2800" in A.train_cmd(A.BY_NAME["cam_curve_2800"], out, roots)
    t = A.test_cmd(A.BY_NAME["drop_all_radar"], out, roots)
    assert t[t.index("--checkpoint") + 1].endswith("main/run/model.pt")
    assert t[t.index("--out") + 1].endswith("drop_all_radar/test") and "--overwrite" in t
    assert t[t.index("--drop-sensors") + 1].split(",") == list(A.RADARS)
    assert A.test_cmd(A.BY_NAME["calib_2"], out, roots)[-2:] == ["--calib-noise-deg", "2"]
    assert A.test_cmd(A.BY_NAME["sync_off"], out, roots)[-2:] == ["--set", "data.sync.enabled=false"]
    assert A.test_cmd(A.BY_NAME["stereo"], out, roots)[5:7] == ["--dataroot", "DS"]
    s = A.test_cmd(A.BY_NAME["shipped_no_cam_front"], out, roots)
    assert s[s.index("--checkpoint") + 1] == A.SHIPPED and s[-2:] == ["--drop-sensors", "CAM_FRONT"]
    h = A.test_cmd(A.BY_NAME["temporal_no_history"], out, roots)
    assert h[h.index("--checkpoint") + 1].endswith("temporal/run/model.pt") and h[-1] == "--no-history"
    assert "--no-history" not in A.test_cmd(A.BY_NAME["temporal"], out, roots)


def test_every_command_parses_with_the_real_clis_and_every_override_is_a_config_key(tmp_path):
    """A typo in a flag or an override key would only show hours into a run."""
    from perception.cli import test as test_cli
    from perception.cli import train as train_cli
    from perception.config import load_config

    roots, out = {False: "D", True: "DS"}, tmp_path / "out"
    for row in A.ROWS:
        if row.trains:
            cmd = A.train_cmd(row, out, roots)
            args = train_cli.build_parser().parse_args(cmd[3:])
            if (A.REPO / row.config).exists():  # the temporal config comes with issue 22
                cfg = load_config(A.REPO / args.config, args.set)
                assert cfg.train.steps == row.steps
        if not row.pretrain:
            args = test_cli.build_parser().parse_args(A.test_cmd(row, out, roots)[3:])
            assert args.split == A.SPLIT and args.calib_noise_deg == row.calib_deg
    cfg = load_config(A.REPO / A.STEREO, A.BY_NAME["stereo_cv_off"].sets)
    assert cfg.model.camera.stereo.enabled is False
    cfg = load_config(A.REPO / A.MONO, A.BY_NAME["dropout_r50_c10"].sets)
    assert (cfg.data.dropout.radar_all, cfg.data.dropout.camera_all) == (0.5, 0.1)
    cfg = load_config(A.REPO / A.MONO, [s.format(out="o") for s in A.BY_NAME["fused_recipe"].sets])
    assert cfg.train.depth_loss.enabled and cfg.train.perspective.enabled and cfg.data.dropout.radar_all == 0.25
    assert cfg.model.camera.pretrained == "o/backbone_pre/run/backbone.pt"
    assert not load_config(A.REPO / A.TEMPORAL).model.head.trajectory_residual.enabled
    for cfg in (load_config(A.REPO / A.TEMPORAL, A.BY_NAME["temporal_traj"].sets),
                load_config(A.REPO / A.MONO, A.BY_NAME["main_traj"].sets)):
        assert cfg.model.head.trajectory_residual.enabled and cfg.train.trajectory_loss.median_mode.enabled
        assert cfg.train.trajectory_loss.soft_mode_target.enabled
    assert load_config(A.REPO / A.TEMPORAL).model.temporal.enabled


def test_select_expands_groups_and_adds_what_rows_need():
    assert [r.name for r in A.select("drop_all_radar")] == ["main", "drop_all_radar"]
    assert [r.name for r in A.select("cam_curve_2800")] == ["backbone_pre", "cam_curve_2800"]
    assert [r.name for r in A.select("dropout_r50_c10_no_radar")] == ["dropout_r50_c10", "dropout_r50_c10_no_radar"]
    assert {r.name for r in A.select("time")} == {"main", "main_traj", "temporal", "temporal_no_history",
                                                  "temporal_seed1", "temporal_traj", "temporal_recipe",
                                                  "recipe_nodrop", "backbone_pre"}
    assert [r.name for r in A.select("temporal")] == ["temporal"]  # the row (the group is "time")
    assert [r.name for r in A.select("fused_recipe_no_radar")] == ["backbone_pre", "fused_recipe",
                                                                   "fused_recipe_no_radar"]
    assert len(A.select("all")) == len(A.ROWS) and A.select("") == []
    with pytest.raises(ValueError, match="unknown row or group 'nope'"):
        A.select("main,nope")


# -- the loop -----------------------------------------------------------------------------------------------------

def test_runs_every_row_once_then_skips_what_is_done(bench):
    kids = FakeChildren(nds={"main": 0.5})
    assert bench.run(["--run", "fusion"], kids) == 0
    fusion = A.GROUPS["fusion"][1]
    assert sorted(kids.rows("train")) == sorted(n for n in fusion if A.BY_NAME[n].trains)
    assert sorted(kids.rows("test")) == sorted(fusion)
    assert all(bench.status(n) == "done" for n in fusion)
    assert float((bench.out / "main" / "train.done").read_text()) >= 0
    md = bench.benchmarks_md.read_text()
    assert "<!-- bench:ablations -->" in md and "| `main` | cross-attention fusion (main model), seed 0 | done | " \
        "700 | 2.5 | 0.500 | 0.250 | 0.500 | 0.600 | 0.400 | 0.100 | 0.050 | 0.020 | 0.300 | 0.200 |" in md
    assert json.loads((bench.out.parent / "ablations.json").read_text())["rows"]["main"]["nds"] == 0.5
    again = FakeChildren()
    assert bench.run(["--run", "fusion"], again) == 0
    assert again.calls == []


def test_a_failed_training_blocks_what_needs_it_and_the_loop_goes_on(bench):
    kids = FakeChildren(fail={("main", "train")})
    assert bench.run(["--run", "fusion"], kids) == 1
    assert (bench.out / "main" / "train.failed").read_text() == "exit 1: error: DatasetError: something broke"
    assert "main" not in kids.rows("test")  # neither main's test nor its test-time rows ran
    assert not any(A.BY_NAME[n].test_of == "main" for n in kids.rows("test"))
    assert bench.status("main_seed1") == "done" and bench.status("stereo") == "done"  # the loop went on
    assert bench.status("main") == "failed (train)"
    assert bench.status("drop_all_radar") == "blocked (needs main)"
    md = bench.benchmarks_md.read_text()
    assert "| `drop_all_radar` | main, all 5 radars masked | blocked (needs main) |" in md
    assert "- `main`: exit 1: error: DatasetError: something broke" in md
    # a rerun retries the failed step and clears its failure
    kids = FakeChildren()
    assert bench.run(["--run", "fusion"], kids) == 0
    assert kids.rows("train") == ["main"] and not (bench.out / "main" / "train.failed").exists()
    assert bench.status("drop_all_radar") == "done"


def test_a_failed_test_is_retried_without_retraining(bench):
    assert bench.run(["--run", "main"], FakeChildren(fail={("main", "test")})) == 1
    assert bench.status("main") == "failed (test)" and (bench.out / "main" / "train.done").exists()
    kids = FakeChildren()
    assert bench.run(["--run", "main"], kids) == 0
    assert kids.rows("train") == [] and kids.rows("test") == ["main"]
    assert not (bench.out / "main" / "test.failed").exists()


def test_an_interrupted_training_resumes_and_a_stale_test_is_redone(bench):
    run = bench.out / "main" / "run"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"step 300")
    assert bench.status("main") == "started (run/last.pt)"
    kids = FakeChildren()
    assert bench.run(["--run", "main"], kids) == 0
    assert kids.calls[0][-1] == "--resume"
    # main retrained after its test-time row was scored: that test is redone, main's own test is not
    assert bench.run(["--run", "drop_cam_front"], FakeChildren()) == 0
    os.utime(bench.out / "drop_cam_front" / "test.done", (1_000_000, 1_000_000))
    assert bench.status("drop_cam_front").startswith("stale")
    kids = FakeChildren()
    assert bench.run(["--run", "drop_cam_front"], kids) == 0
    assert kids.rows("train") == [] and kids.rows("test") == ["drop_cam_front"]


def test_ctrl_c_or_kill_stops_the_loop_and_leaves_it_resumable(bench):
    def interrupted(cmd, **kw):
        raise KeyboardInterrupt

    assert bench.run(["--run", "main"], interrupted) == 130
    assert not (bench.out / "main" / "train.done").exists() and not (bench.out / "main" / "train.failed").exists()


def test_adopts_an_existing_out_dir_of_the_cameras_queue(bench):
    """The layout benchmarks/cameras/run.sh writes (markers with integer seconds): nothing is redone."""
    for name in ("cam_base", "cam_depth", "cam_depth_persp", "backbone_pre", "cam_depth_persp_pre"):
        d = bench.out / name
        (d / "run").mkdir(parents=True)
        (d / "run" / ("backbone.pt" if name == "backbone_pre" else "model.pt")).write_bytes(b"w")
        (d / "run" / "summary.json").write_text(json.dumps({"steps": 700, "minutes": 20.0}))
        (d / "train.done").write_text("1260\n")
        if name != "backbone_pre":
            _metrics_files(d / "test", 0.3)
            (d / "test.done").write_text("97\n")
    kids = FakeChildren()
    assert bench.run(["--run", "cam_base,cam_depth,cam_depth_persp,backbone_pre,cam_depth_persp_pre"], kids) == 0
    assert kids.calls == []
    md = bench.benchmarks_md.read_text()
    assert "| `cam_depth_persp_pre` | camera only + depth + perspective + pretrained backbone | done | 700 | 20.0 | " \
        "0.300 | 0.150 |" in md
    assert "| `backbone_pre` | backbone pretraining stage (perspective + depth targets) | done | 700 | 20.0 | - |" in md


def test_a_dataroot_that_is_not_the_ablation_world_is_an_error_with_the_command_to_make_it(bench, tmp_path, capsys):
    wrong = _world(tmp_path / "other", scenes=40, generator="synth/1")
    msg = A.check_world(str(wrong), False)
    assert "scenes=40 (need 60)" in msg and "generator='synth/1' (need 'synth/2')" in msg
    assert "perception-synth --out " + str(wrong) + " --scenes 60 --samples-per-scene 20 --seed 0 --keyframes-only" \
        in msg
    assert A.check_world(str(bench.mono), False) is None and A.check_world(str(bench.stereo), True) is None
    assert "rig='nuscenes' (need 'stereo_radar')" in A.check_world(str(bench.mono), True)
    missing = A.check_world(str(tmp_path / "none"), True)
    assert "cannot read it" in missing and "--rig configs/rigs/stereo_radar.yaml" in missing
    # a bad stereo root stops the stereo rows only
    kids = FakeChildren()
    assert bench.run(["--run", "main,stereo", "--stereo-dataroot", str(tmp_path / "none")], kids) == 1
    assert kids.rows("train") == ["main"]
    err = capsys.readouterr()
    assert "error: " + missing in err.err and "skipped   stereo: its dataroot is not the ablation world" in err.out


def test_a_row_whose_config_does_not_exist_yet_is_pending_and_skipped(bench, monkeypatch):
    row = dataclasses.replace(A.BY_NAME["temporal"], config="configs/not_written_yet.yaml")
    monkeypatch.setattr(A, "BY_NAME", {**A.BY_NAME, "temporal": row})
    monkeypatch.setattr(A, "ROWS", tuple(row if r.name == "temporal" else r for r in A.ROWS))
    kids = FakeChildren()
    assert bench.run(["--run", "temporal"], kids) == 1
    assert kids.rows("train") == []
    assert bench.status("temporal") == "pending (configs/not_written_yet.yaml missing)"
    assert f"| `temporal` | {row.title} | pending (configs/not_written_yet.yaml missing) |" \
        in bench.benchmarks_md.read_text()


def test_dry_run_prints_the_commands_and_runs_nothing(bench, capsys):
    kids = FakeChildren()
    assert bench.run(["--run", "drop_all_radar", "--dry-run"], kids) == 0
    out = capsys.readouterr().out
    assert kids.calls == [] and not bench.out.exists()
    assert out.count("would run ") == 3 and "--drop-sensors RADAR_FRONT," in out


def test_publish_only_needs_no_data(bench, monkeypatch, capsys):
    _children(monkeypatch, FakeChildren())
    assert A.main(["--publish-only", "--out-dir", str(bench.out)]) == 0
    assert "| `shipped` | checkpoints/synthetic_tiny.pt | pending |" in bench.benchmarks_md.read_text()
    with pytest.raises(SystemExit) as e:
        A.main(["--run", "nope", "--out-dir", str(bench.out)])
    assert e.value.code == 2


# -- the ledger: finished rows outlive the machine that ran them ---------------------------------------------------

def test_finished_rows_go_to_the_ledger_and_a_fresh_machine_publishes_them_without_running(bench, tmp_path):
    kids = FakeChildren(nds={"main": 0.5, "cam_base": 0.2, "radar_only": 0.3})
    assert bench.run(["--run", "main,cam_base,radar_only"], kids) == 0
    ledger = json.loads(A.LEDGER.read_text())
    assert ledger["schema"] == A.LEDGER_SCHEMA and sorted(ledger["rows"]) == ["cam_base", "main", "radar_only"]
    assert ledger["rows"]["main"]["result"]["nds"] == 0.5
    assert ledger["rows"]["main"]["definition"] == A.definition(A.BY_NAME["main"])
    # a fresh machine: OUT is gone, the ledger (committed) is not
    shutil.rmtree(bench.out)
    kids = FakeChildren()
    assert bench.run(["--run", "main,cam_base,radar_only"], kids) == 0
    assert kids.calls == []  # nothing is trained or tested again
    md = bench.benchmarks_md.read_text()
    assert "| `main` | cross-attention fusion (main model), seed 0 | recorded | 700 | 2.5 | 0.500 |" in md
    assert "(3 of them \"recorded\"" in md
    fusion = next(ln for ln in md.splitlines() if ln.startswith("| Fusion beats the best single modality"))
    assert "NDS 0.500 vs camera only 0.200, radar only 0.300 (margin +0.200)" in fusion and "**met**" in fusion
    # the ledger is not rewritten from recorded rows (their source stays the run that made them)
    assert json.loads(A.LEDGER.read_text()) == ledger


def test_a_recorded_row_is_rerun_when_a_row_that_is_run_needs_its_checkpoint(bench):
    assert bench.run(["--run", "main"], FakeChildren()) == 0
    shutil.rmtree(bench.out)
    kids = FakeChildren()
    assert bench.run(["--run", "drop_all_radar"], kids) == 0  # not recorded: needs main's model.pt on this machine
    assert kids.rows("train") == ["main"] and sorted(kids.rows("test")) == ["drop_all_radar", "main"]


def test_a_changed_row_definition_or_shipped_checkpoint_is_pending_not_recorded(bench, monkeypatch, tmp_path):
    ckpt = tmp_path / "shipped.pt"
    ckpt.write_bytes(b"checkpoint one")
    shipped = dataclasses.replace(A.BY_NAME["shipped"], checkpoint=str(ckpt))
    main = A.BY_NAME["main"]
    monkeypatch.setattr(A, "ROWS", tuple(shipped if r.name == "shipped" else r for r in A.ROWS))
    monkeypatch.setitem(A.BY_NAME, "shipped", shipped)
    assert bench.run(["--run", "main,shipped"], FakeChildren()) == 0
    shutil.rmtree(bench.out)
    res = A.collect(bench.out, A.LEDGER)
    assert res["main"]["status"] == res["shipped"]["status"] == "done" and res["shipped"]["recorded"]
    ckpt.write_bytes(b"checkpoint two")  # a new shipped checkpoint: its old figures are not its figures
    monkeypatch.setitem(A.BY_NAME, "main", dataclasses.replace(main, sets=("train.seed=7",)))
    monkeypatch.setattr(A, "ROWS", tuple(A.BY_NAME[r.name] for r in A.ROWS))
    res = A.collect(bench.out, A.LEDGER)
    assert res["shipped"]["status"] == "pending" and "recorded" not in res["shipped"]
    assert res["main"]["status"] == "pending"  # its overrides changed


def test_a_failed_row_in_out_is_not_hidden_by_its_ledger_entry(bench):
    assert bench.run(["--run", "main"], FakeChildren(nds={"main": 0.5})) == 0
    shutil.rmtree(bench.out)
    (bench.out / "main").mkdir(parents=True)
    (bench.out / "main" / "train.failed").write_text("exit 1: error: boom")
    assert A.collect(bench.out, A.LEDGER)["main"]["status"] == "failed (train)"


def test_a_ledger_that_is_not_one_is_an_error_and_is_left_as_it_is(bench, capsys):
    A.LEDGER.write_text("{not json")
    with pytest.raises(SystemExit) as e:
        bench.run(["--publish-only"])
    assert "ablations_results.json: not JSON" in str(e.value) and "git checkout" in str(e.value)
    assert A.LEDGER.read_text() == "{not json"
    A.LEDGER.write_text(json.dumps({"schema": "other/9", "rows": {}}))
    with pytest.raises(SystemExit) as e:
        bench.run(["--publish-only"])
    assert "schema 'other/9'" in str(e.value)


def test_the_committed_ledger_matches_the_rows_it_records():
    """A row whose definition changed after it was recorded would silently drop out of the published table: the
    committed ledger must describe the current rows (rerun a changed row, or restore its definition)."""
    rows = A.read_ledger(A.REPO / "benchmarks" / "ablations_results.json")
    assert len(rows) >= 40  # the finished table, not an empty file
    stale = [n for n, e in rows.items() if n not in A.BY_NAME or e["definition"] != A.definition(A.BY_NAME[n])]
    assert stale == []
    for n, e in rows.items():
        r = e["result"]
        assert A.BY_NAME[n].pretrain or 0 < r["nds"] < 1 and 0 <= r["map"] < 1, n
        assert e["source"]


# -- the table and the targets ------------------------------------------------------------------------------------

def test_the_table_lists_every_row_and_pending_targets(tmp_path):
    res = A.collect(tmp_path / "empty")
    md = A.markdown(res)
    for row in A.ROWS:
        assert f"| `{row.name}` | {row.title} | pending" in md  # temporal: "pending (its config missing)"
    assert "| car AP | pedestrian AP | bicycle AP | traffic_cone AP | depth AbsRel all | in boxes |" in md
    targets = md[md.index("### Targets"):]
    assert targets.count("| pending |") == len(A.TARGETS)  # every target waits
    assert "0 of " in md and "Failed steps" not in md


def test_stereo_depth_is_cell_weighted_over_the_paired_cameras():
    per = {"CAM_FRONT_L": {"abs_rel": 0.1, "cells": 1}, "CAM_BACK_R": {"abs_rel": 0.4, "cells": 3},
           "CAM_LEFT": {"abs_rel": 9.0, "cells": 100}, "CAM_BACK_L": {"abs_rel": None, "cells": 0}}
    assert A.stereo_abs_rel(per) == pytest.approx((0.1 + 1.2) / 4)
    assert A.stereo_abs_rel({"CAM_LEFT": {"abs_rel": 1.0, "cells": 5}}) is None


def _verdict(title: str, **rows: dict) -> str:
    res = {r.name: {"status": "pending"} for r in A.ROWS}
    for name, figures in rows.items():
        res[name] = {"status": "done", **figures}
    target = next(t for t in A.TARGETS if t.title.startswith(title))
    return A.judge(target, res)[3]


@pytest.mark.parametrize("title, rows, verdict", [
    # fusion beats the best single modality by >= 0.10 (0.3 - 0.2 is 0.0999... in floats: judged as shown)
    ("Fusion beats", {"main": {"nds": 0.3}, "cam_base": {"nds": 0.2}, "radar_only": {"nds": 0.1}}, "**met**"),
    ("Fusion beats", {"main": {"nds": 0.2999}, "cam_base": {"nds": 0.1}, "radar_only": {"nds": 0.2}}, "**missed**"),
    ("Radar improves", {"main": {"mave": 0.7}, "cam_base": {"mave": 1.0}}, "**met**"),
    ("Radar improves", {"main": {"mave": 0.7001}, "cam_base": {"mave": 1.0}}, "**missed**"),
    ("Cross-attention", {"main": {"nds": 0.4}, "conv_fusion": {"nds": 0.4}}, "**met**"),
    ("Cross-attention", {"main": {"nds": 0.399}, "conv_fusion": {"nds": 0.4}}, "**missed**"),
    ("Sync on", {"main": {"nds": 0.43}, "sync_off": {"nds": 0.4}}, "**met**"),
    ("Sync on", {"main": {"nds": 0.4299}, "sync_off": {"nds": 0.4}}, "**missed**"),
    ("Stereo rig", {"stereo": {"mate": 0.5}, "main": {"mate": 0.5}}, "**missed**"),
    ("Stereo rig", {"stereo": {"mate": 0.499}, "main": {"mate": 0.5}}, "**met**"),
    ("One camera masked", {"main": {"nds": 0.45}, "drop_cam_front": {"nds": 0.4}}, "**missed**"),
    ("One camera masked", {"main": {"nds": 0.4499}, "drop_cam_front": {"nds": 0.4}}, "**met**"),
    ("All radar masked", {"drop_all_radar": {"nds": 0.21, "map": 0.1}, "cam_base": {"nds": 0.3}}, "**met**"),
    ("All radar masked", {"drop_all_radar": {"nds": 0.21, "map": 0.0999}, "cam_base": {"nds": 0.3}}, "**missed**"),
    ("All radar masked", {"drop_all_radar": {"nds": 0.2099, "map": 0.2}, "cam_base": {"nds": 0.3}}, "**missed**"),
    ("Main model over 3 seeds", {"main": {"nds": 0.4, "map": 0.3}, "main_seed1": {"nds": 0.5, "map": 0.3},
                                 "main_seed2": {"nds": 0.45, "map": 0.3}}, "reported"),
    ("Camera only at 700", {"cam_depth_persp_pre": {"nds": 0.35, "map": 0.2}}, "**met**"),
    ("Camera only at 700", {"cam_depth_persp_pre": {"nds": 0.35, "map": 0.1999}}, "**missed**"),
    ("Camera only at 2800", {"cam_curve_2800": {"nds": 0.3499, "map": 0.3}}, "**missed**"),
    ("Depth in boxes, camera", {"cam_depth_persp_pre": {"depth_in": 0.25}}, "**met**"),
    ("Depth in boxes, fused", {"main_depth": {"depth_in": 0.2501}}, "**missed**"),
    ("Stereo cost volume: mATE", {"stereo": {"mate": 0.45}, "stereo_cv_off": {"mate": 0.5}}, "**met**"),
    ("Stereo cost volume: mATE", {"stereo": {"mate": 0.4501}, "stereo_cv_off": {"mate": 0.5}}, "**missed**"),
    ("Stereo cost volume: depth", {"stereo": {"depth_stereo": 0.3}, "stereo_cv_off": {"depth_stereo": 0.3}},
     "**missed**"),
    ("Stereo cost volume with depth supervision: mATE",
     {"stereo_depth": {"mate": 0.45}, "stereo_depth_cv_off": {"mate": 0.5}}, "**met**"),
    ("Stereo cost volume with depth supervision: mATE",
     {"stereo_depth": {"mate": 0.4501}, "stereo_depth_cv_off": {"mate": 0.5}}, "**missed**"),
    ("Stereo cost volume with depth supervision: depth",
     {"stereo_depth": {"depth_stereo": 0.2999}, "stereo_depth_cv_off": {"depth_stereo": 0.3}}, "**met**"),
    ("Temporal velocity", {"temporal": {"mave": 0.85}, "main": {"mave": 1.0}}, "**met**"),
    ("Temporal NDS", {"temporal": {"nds": 0.42}, "main": {"nds": 0.4}}, "**met**"),
    ("Temporal NDS", {"temporal": {"nds": 0.4199}, "main": {"nds": 0.4}}, "**missed**"),
    ("Temporal car minADE1", {"temporal": {"minADE_1": 1.0, "cv_minADE_1": 1.0}}, "**met**"),
    ("Temporal car minADE6", {"temporal": {"minADE_6": 0.75, "cv_minADE_6": 1.0}}, "**met**"),
    ("Temporal car minADE6", {"temporal": {"minADE_6": math.nan, "cv_minADE_6": 1.0}}, "**missed**"),  # no match
    ("Shipped checkpoint", {"shipped": {"nds": 0.55}}, "**met**"),
    ("Shipped checkpoint", {"shipped": {"nds": 0.5499}}, "**missed**"),
    ("Shipped, all radars", {"shipped_no_radar": {"nds": 0.3}}, "**met**"),
    ("Shipped, all cameras", {"shipped": {"nds": 0.55}, "shipped_no_cameras": {"nds": 0.45}}, "**met**"),
    ("Shipped, all cameras", {"shipped": {"nds": 0.55}, "shipped_no_cameras": {"nds": 0.4501}}, "**missed**"),
    ("Shipped, one camera", {"shipped": {"nds": 0.55}, "shipped_no_cam_front": {"nds": 0.5}}, "**missed**"),
    ("Shipped, all radars masked: a working", {"shipped_no_radar": {"nds": 0.21, "map": 0.1},
                                               "cam_curve_1400": {"nds": 0.3}}, "**met**"),
    ("Shipped, all radars masked: a working", {"shipped_no_radar": {"nds": 0.2099, "map": 0.2},
                                               "cam_curve_1400": {"nds": 0.3}}, "**missed**"),
    ("Shipped, depth in boxes", {"shipped": {"depth_in": 0.2501}}, "**missed**"),
    ("Shipped velocity", {"shipped": {"mave": 0.1}, "recipe_nodrop": {"mave": 1.0}}, "reported"),
    ("Shipped car minADE1", {"shipped": {"minADE_1": 1.0001, "cv_minADE_1": 1.0}}, "**missed**"),
    ("Shipped car minADE6", {"shipped": {"minADE_6": 0.75, "cv_minADE_6": 1.0}}, "**met**"),
    ("Cross-attention vs conv fusion over 3 seeds", {k: {"nds": 0.3, "map": 0.2, "mave": 0.5} for k in
                                                    ("main", "main_seed1", "main_seed2", "conv_fusion",
                                                     "conv_fusion_seed1", "conv_fusion_seed2")}, "reported"),
    # the velocity fixes: every seed's mAVE <= 0.7 and the mean mAP at most 0.02 below the reference seeds'
    ("Velocity weight 1.0", {"main_vel1": {"mave": 0.7, "map": 0.18}, "main_vel1_seed1": {"mave": 0.3, "map": 0.18},
                             "main": {"mave": 1.1, "map": 0.2}, "main_seed1": {"mave": 0.4, "map": 0.2}}, "**met**"),
    ("Velocity weight 1.0", {"main_vel1": {"mave": 0.7001, "map": 0.2}, "main_vel1_seed1": {"mave": 0.3, "map": 0.2},
                             "main": {"mave": 1.1, "map": 0.2}, "main_seed1": {"mave": 0.4, "map": 0.2}}, "**missed**"),
    ("Velocity weight 1.0", {"main_vel1": {"mave": 0.3, "map": 0.1799}, "main_vel1_seed1": {"mave": 0.3, "map": 0.18},
                             "main": {"mave": 1.1, "map": 0.2}, "main_seed1": {"mave": 0.4, "map": 0.2}}, "**missed**"),
    ("Radar skip", {**{r: {"mave": 0.7, "map": 0.18} for r in ("main_rskip", "main_rskip_seed1", "main_rskip_seed2")},
                    **{r: {"mave": 1.0, "map": 0.2} for r in ("main", "main_seed1", "main_seed2")}}, "**met**"),
    ("Radar skip", {**{r: {"mave": 0.5, "map": 0.2} for r in ("main_rskip", "main_rskip_seed1")},
                    "main_rskip_seed2": {"mave": 0.7001, "map": 0.2},
                    **{r: {"mave": 1.0, "map": 0.2} for r in ("main", "main_seed1", "main_seed2")}}, "**missed**"),
    ("Radar skip", {**{r: {"mave": 0.5, "map": 0.1799} for r in ("main_rskip", "main_rskip_seed1", "main_rskip_seed2")},
                    **{r: {"mave": 1.0, "map": 0.2} for r in ("main", "main_seed1", "main_seed2")}}, "**missed**"),
    ("What the history adds", {"temporal": {"mave": 0.4, "nds": 0.3}, "temporal_no_history": {"mave": 0.5, "nds": 0.3},
                               "shipped": {"mave": 1.0, "nds": 0.3}, "shipped_no_history": {"mave": 1.1, "nds": 0.3}},
     "reported"),
])
def test_target_rules_at_their_boundaries(title, rows, verdict):
    assert _verdict(title, **rows) == verdict


def test_a_target_waits_for_rows_not_done():
    res = {r.name: {"status": "pending"} for r in A.ROWS}
    res["main"] = {"status": "done", "nds": 0.5}
    res["conv_fusion"] = {"status": "failed (test)", "nds": 0.1}  # figures of a failed row are not judged
    t = next(t for t in A.TARGETS if t.title.startswith("Cross-attention"))
    assert A.judge(t, res) == [t.title, "waiting for conv_fusion", t.goal, "pending"]


def test_the_camera_curve_is_drawn_from_the_finished_curve_rows(tmp_path):
    res = {r.name: {"status": "pending"} for r in A.ROWS}
    assert A.curve_points(res) == [] and not A.plot_curve(res, tmp_path / "c.png")
    res["cam_curve_2800"] = {"status": "done", "nds": 0.3, "map": 0.24, "depth_in": 0.27}
    assert A.curve_points(res) == []  # one point is not a curve
    res["cam_depth_persp_pre"] = {"status": "done", "nds": 0.2, "map": 0.1, "depth_in": 0.36}
    res["cam_curve_1400"] = {"status": "failed (test)", "nds": 0.9, "map": 0.9}  # a failed row is not drawn
    assert A.curve_points(res) == [(700, 0.2, 0.1, 0.36), (2800, 0.3, 0.24, 0.27)]
    png = tmp_path / "images" / "c.png"
    assert A.plot_curve(res, png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"images/{A.CURVE_PNG}" in A.markdown(res)
