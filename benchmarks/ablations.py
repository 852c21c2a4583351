"""Ablations (issue 10): what each part of the system is worth, measured on the synthetic world.

    python -m benchmarks.ablations                       # everything: ~3 h on 2 CPU cores, resumable
    python -m benchmarks.ablations --dry-run             # the plan: steps, commands, which are done
    python -m benchmarks.ablations --only main,camera_only,drop_all_radar
    python -m benchmarks.ablations --publish-only        # rewrite the table from the state file

Training variants, all from scratch with the same fixed budget (``--steps``, default 700 optimiser steps x the
config's batch of 4; the one-cycle schedule spans them) and evaluated with ``perception-test`` on ``synth_val``:

================  =====================================================================================
camera_only       ``model.radar.enabled=false``
radar_only        ``model.camera.enabled=false``
conv_fusion       ``model.fusion.kind=conv``
main              the main model (cross-attention fusion), ``train.seed=0``
main_seed1        the main model, ``train.seed=1`` (with ``main``: mean and spread over 2 seeds)
sync_off          ``data.sync.enabled=false``: trained AND tested without time alignment
stereo            ``configs/synthetic_tiny_stereo.yaml`` on the stereo dataset (``--stereo-dataroot``)
================  =====================================================================================

Mono vs stereo: the stereo dataset is the same world (``perception-synth --seed``, same scenes and samples) as
``--dataroot``, rendered through ``configs/rigs/stereo_radar.yaml`` (the world and the sensors draw from separate
random streams). Its mono counterpart is the ``main`` row (seed 0) on ``--dataroot``: the same world through the
nuScenes mono rig, trained with the same config and budget; no separate mono training is run. Before comparing, a
check step fingerprints the annotations of both roots (every actor's box at every sample) and the table says
whether the two worlds are identical.

Test-time variants of ``main`` (no training): calibration noise 0 (= the ``main`` evaluation), 0.5, 1, 2 degrees
(``--calib-noise-deg``); dropping CAM_FRONT, all six cameras, RADAR_FRONT, all five radars (``--drop-sensors``).

Every step is a subprocess (``python -m perception.cli.{synth,train,test}``) with the GLIBC_TUNABLES of the
training docs; its log and outputs go to ``benchmarks/out/ablations/<variant>/`` (``train.log``, ``run/``,
``test.log``, ``test/``). Missing datasets are generated first with the shipped data's arguments.

Resumable: ``--state`` (JSON, written atomically after every step) records each finished step (training: the
checkpoint and the wall time; evaluation: the metrics). A rerun skips finished steps and retries failed ones; a
training that was interrupted continues from its ``run/last.pt`` (``perception-train --resume``, exact resume;
the wall time counts each interrupted attempt up to its last checkpoint). A failed step is recorded with its
error and the run goes on; steps that need it are marked blocked. After every step the table is published to the
``ablations`` section of docs/BENCHMARKS.md (rows not yet run show as pending) and to benchmarks/out/ablations.json.
The state is tied to its settings (steps, data, overrides): change them with a new ``--state`` and ``--out-dir``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from benchmarks.report import REPO, table

NAME = "ablations"
GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456"
VERSION = "v1.0-synth"
SPLIT = "synth_val"
MAIN_CONFIG = "configs/synthetic_tiny.yaml"
STEREO_CONFIG = "configs/synthetic_tiny_stereo.yaml"
MONO_RIG, STEREO_RIG = "configs/rigs/nuscenes.yaml", "configs/rigs/stereo_radar.yaml"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
RADARS = ("RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT", "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT")
STATE_SCHEMA = "ablations-state/1"
# "working" camera-only detector when all radar is dropped from the main model: at least half the NDS of the
# dedicated camera_only model AND an mAP of at least 0.10
WORKING_NDS_FRACTION, WORKING_MIN_MAP = 0.5, 0.10


# ---------------------------------------------------------------------------------------------------------------
# Variants and the plan
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainVariant:
    name: str
    title: str
    sets: tuple[str, ...] = ()
    config: str = MAIN_CONFIG
    stereo: bool = False
    test_sets: tuple[str, ...] = ()  # data-side overrides at test time


@dataclass(frozen=True)
class TestVariant:
    """perception-test of the ``main`` checkpoint under a perturbation."""

    name: str
    title: str
    drop: tuple[str, ...] = ()
    calib_deg: float = 0.0
    alias_of_main: bool = False  # calibration noise 0 is the plain evaluation of main


TRAIN_VARIANTS = (
    TrainVariant("main", "cross-attention fusion (main model), seed 0"),
    TrainVariant("camera_only", "cameras only", ("model.radar.enabled=false",)),
    TrainVariant("radar_only", "radar only", ("model.camera.enabled=false",)),
    TrainVariant("conv_fusion", "conv fusion instead of cross-attention", ("model.fusion.kind=conv",)),
    TrainVariant("sync_off", "time sync disabled (train and test)", ("data.sync.enabled=false",),
                 test_sets=("data.sync.enabled=false",)),
    TrainVariant("stereo", "main model, stereo rig (same world)", config=STEREO_CONFIG, stereo=True),
    TrainVariant("main_seed1", "main model, seed 1", ("train.seed=1",)),
    # issue 21: lidar depth supervision of the camera depth head, and stronger whole-modality dropout
    TrainVariant("camera_only_depth", "cameras only, lidar depth supervision", ("model.radar.enabled=false",
                                                                               "train.depth_loss.enabled=true")),
    TrainVariant("main_depth", "main model, lidar depth supervision", ("train.depth_loss.enabled=true",)),
    TrainVariant("main_dropout", "main model, modality dropout radar_all 0.25 camera_all 0.1",
                 ("data.dropout.radar_all=0.25", "data.dropout.camera_all=0.1")),
)
TEST_VARIANTS = (
    TestVariant("calib_0", "main, calibration noise 0 deg", alias_of_main=True),
    TestVariant("calib_0.5", "main, calibration noise 0.5 deg", calib_deg=0.5),
    TestVariant("calib_1", "main, calibration noise 1 deg", calib_deg=1.0),
    TestVariant("calib_2", "main, calibration noise 2 deg", calib_deg=2.0),
    TestVariant("drop_cam_front", "main, CAM_FRONT dropped", drop=("CAM_FRONT",)),
    TestVariant("drop_all_cameras", "main, all 6 cameras dropped", drop=CAMERAS),
    TestVariant("drop_radar_front", "main, RADAR_FRONT dropped", drop=("RADAR_FRONT",)),
    TestVariant("drop_all_radar", "main, all 5 radars dropped", drop=RADARS),
)
TRAIN_BY_NAME = {v.name: v for v in TRAIN_VARIANTS}
TEST_BY_NAME = {v.name: v for v in TEST_VARIANTS}
ALL_NAMES = tuple(TRAIN_BY_NAME) + tuple(TEST_BY_NAME)
# the order of the table rows (the plan runs main, its test-time variants, then the other trainings)
ROW_ORDER = ("main", "main_seed1", "camera_only", "camera_only_depth", "main_depth", "main_dropout", "radar_only",
             "conv_fusion", "sync_off", "stereo") + \
    tuple(TEST_BY_NAME)


@dataclass(frozen=True)
class Settings:
    """What the results depend on: a state file belongs to one Settings."""

    steps: int = 700
    dataroot: str = "data/synth"
    stereo_dataroot: str = "data/synth_stereo"
    world_seed: int = 0
    scenes: int = 60
    samples_per_scene: int = 20
    image_scale: float = 0.5
    extra_sets: tuple[str, ...] = ()  # overrides applied to every training (e.g. a smaller model for a smoke test)

    def as_dict(self) -> dict:
        return {"steps": self.steps, "dataroot": self.dataroot, "stereo_dataroot": self.stereo_dataroot,
                "world_seed": self.world_seed, "scenes": self.scenes, "samples_per_scene": self.samples_per_scene,
                "image_scale": self.image_scale, "extra_sets": list(self.extra_sets)}

    def root(self, stereo: bool) -> Path:
        return _abs(self.stereo_dataroot if stereo else self.dataroot)


@dataclass
class Step:
    key: str  # "data:mono", "check:same_world", "train:<variant>", "eval:<variant>"
    kind: str  # data | check | train | eval
    variant: str
    cmd: list[str] = field(default_factory=list)
    out: Path | None = None  # dataset root, run folder or test folder
    log: Path | None = None
    deps: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)


def _abs(p: str | Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() else (REPO / p)


def _rel(p: str | Path) -> str:
    p = Path(p)
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def python() -> str:
    return sys.executable or "python"


def synth_cmd(settings: Settings, stereo: bool) -> list[str]:
    cmd = [python(), "-m", "perception.cli.synth", "--out", _rel(settings.root(stereo)), "--scenes",
           str(settings.scenes), "--samples-per-scene", str(settings.samples_per_scene), "--seed",
           str(settings.world_seed), "--keyframes-only", "--image-scale", f"{settings.image_scale:g}", "--no-progress"]
    if stereo:
        cmd += ["--rig", STEREO_RIG]
    return cmd


def train_cmd(settings: Settings, v: TrainVariant, run_dir: Path) -> list[str]:
    cmd = [python(), "-m", "perception.cli.train", v.config, "--dataroot", _rel(settings.root(v.stereo)),
           "--version", VERSION, "--out", _rel(run_dir), "--no-progress", "--no-eval", "--set", f"train.steps={settings.steps}",
           "--set", "train.checkpoint_every=100"]
    for s in tuple(settings.extra_sets) + v.sets:
        cmd += ["--set", s]
    return cmd


def test_cmd(settings: Settings, checkpoint: str | Path, stereo: bool, out: Path, drop: Sequence[str] = (),
             calib_deg: float = 0.0, sets: Sequence[str] = ()) -> list[str]:
    cmd = [python(), "-m", "perception.cli.test", "--checkpoint", _rel(checkpoint), "--dataroot",
           _rel(settings.root(stereo)), "--version", VERSION, "--split", SPLIT, "--out", _rel(out), "--no-progress"]
    if drop:
        cmd += ["--drop-sensors", ",".join(drop)]
    if calib_deg:
        cmd += ["--calib-noise-deg", f"{calib_deg:g}"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def select(only: Iterable[str] | None) -> list[str]:
    """Variant names to run: ``only`` plus what they need (a test-time variant needs ``main``)."""
    if not only:
        return list(ALL_NAMES)
    names = [n.strip() for n in only if n.strip()]
    unknown = [n for n in names if n not in ALL_NAMES]
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {unknown}; known: {', '.join(ALL_NAMES)}")
    if any(n in TEST_BY_NAME for n in names) and "main" not in names:
        names.append("main")
    return [n for n in ALL_NAMES if n in names]


def build_plan(settings: Settings, out_dir: Path, only: Iterable[str] | None = None) -> list[Step]:
    """The ordered steps: datasets, main (train + eval) and its test-time variants first (most targets need
    them), then the other trainings, each followed by its evaluation."""
    names = select(only)
    trains = [TRAIN_BY_NAME[n] for n in ("main", "camera_only", "radar_only", "conv_fusion", "sync_off", "stereo",
                                         "main_seed1", "camera_only_depth", "main_depth", "main_dropout")
              if n in names]
    tests = [TEST_BY_NAME[n] for n in TEST_BY_NAME if n in names]
    steps: list[Step] = []
    if any(not v.stereo for v in trains):
        steps.append(Step("data:mono", "data", "data", synth_cmd(settings, False), settings.root(False),
                          out_dir / "data" / "synth_mono.log", info={"rig": "nuscenes"}))
    for v in trains:
        if v.stereo:
            steps.append(Step("data:stereo", "data", "data", synth_cmd(settings, True), settings.root(True),
                              out_dir / "data" / "synth_stereo.log", info={"rig": "stereo_radar"}))
            steps.append(Step("check:same_world", "check", "data", [], None, None, ("data:mono", "data:stereo")))
            if not any(s.key == "data:mono" for s in steps):
                steps.insert(0, Step("data:mono", "data", "data", synth_cmd(settings, False), settings.root(False),
                                     out_dir / "data" / "synth_mono.log", info={"rig": "nuscenes"}))
        vdir = out_dir / v.name
        data = "data:stereo" if v.stereo else "data:mono"
        run_dir = vdir / "run"
        steps.append(Step(f"train:{v.name}", "train", v.name, train_cmd(settings, v, run_dir), run_dir,
                          vdir / "train.log", (data,)))
        steps.append(Step(f"eval:{v.name}", "eval", v.name,
                          test_cmd(settings, run_dir / "model.pt", v.stereo, vdir / "test", sets=v.test_sets),
                          vdir / "test", vdir / "test.log", (f"train:{v.name}",)))
        if v.name == "main":
            ck = run_dir / "model.pt"
            for t in tests:
                if t.alias_of_main:
                    continue
                tdir = out_dir / t.name
                steps.append(Step(f"eval:{t.name}", "eval", t.name,
                                  test_cmd(settings, ck, False, tdir / "test", t.drop, t.calib_deg),
                                  tdir / "test", tdir / "test.log", ("train:main",)))
    return steps


# ---------------------------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------------------------


class StateError(RuntimeError):
    pass


class State:
    """The JSON state file: settings + one record per step key; every ``put`` rewrites it atomically."""

    def __init__(self, path: Path, settings: Settings):
        self.path = Path(path)
        self.settings = settings
        if self.path.exists():
            data = json.loads(self.path.read_text())
            if data.get("schema") != STATE_SCHEMA:
                raise StateError(f"{self.path}: not an ablations state file (schema {data.get('schema')!r})")
            if data.get("settings") != settings.as_dict():
                raise StateError(f"{self.path} was made with other settings:\n  {data.get('settings')}\nvs now\n  "
                                 f"{settings.as_dict()}\nrerun with the same options, or start a new run with "
                                 "another --state and --out-dir")
            self.steps: dict[str, dict] = data.get("steps", {})
        else:
            self.steps = {}

    def get(self, key: str) -> dict:
        return self.steps.get(key, {})

    def done(self, key: str) -> bool:
        return self.get(key).get("status") == "done"

    def put(self, key: str, record: dict) -> None:
        self.steps[key] = record
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump({"schema": STATE_SCHEMA, "settings": self.settings.as_dict(), "steps": self.steps}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------


class Interrupted(BaseException):
    """SIGTERM/SIGINT while a step runs: the child is stopped and the state says where we were."""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_subprocess(cmd: Sequence[str], log: Path, env: dict[str, str]) -> int:
    """Run ``cmd`` in the repository root, stdout and stderr appended to ``log``; returns the exit code. On an
    interruption the child is terminated (then killed) before the exception goes on."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


Runner = Callable[[Sequence[str], Path, dict], int]


def error_from_log(log: Path | None, rc: int) -> str:
    """The child's own error line ('error: Kind: ...' of the CLIs, or a traceback's last line)."""
    text = ""
    if log is not None and log.exists():
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()[-200:] if ln.strip()]
        err = [ln for ln in lines if ln.startswith("error:") or "Error" in ln.split(":")[0]]
        text = err[-1] if err else (lines[-1] if lines else "")
    return f"exit {rc}: {text[:400]}" if text else f"exit {rc}"


def dataset_status(root: Path, expect: dict) -> tuple[str, str]:
    """('ok'|'missing'|'partial'|'mismatch', detail) for a synthetic root against its expected generator.json."""
    gen = root / VERSION / "generator.json"
    if not (root / VERSION).exists():
        return "missing", f"{_rel(root)} does not exist"
    if not gen.exists():
        return "partial", f"{_rel(gen)} is missing (an interrupted perception-synth?)"
    have = json.loads(gen.read_text())
    diff = {k: (have.get(k), v) for k, v in expect.items() if have.get(k) != v}
    if diff:
        return "mismatch", f"{_rel(root)} was generated with other arguments: " + ", ".join(
            f"{k}={a!r} (need {b!r})" for k, (a, b) in diff.items())
    return "ok", "present"


def world_fingerprint(root: Path) -> dict[str, str]:
    """Per scene name: a hash of every annotation (sample, instance, box). Two roots of the same world have the
    same fingerprints whatever their rigs (the annotations are rig-independent)."""
    v = root / VERSION
    scenes = {s["token"]: s["name"] for s in json.loads((v / "scene.json").read_text())}
    sample_scene = {s["token"]: scenes[s["scene_token"]] for s in json.loads((v / "sample.json").read_text())}
    per: dict[str, list[str]] = {n: [] for n in scenes.values()}
    for a in json.loads((v / "sample_annotation.json").read_text()):
        per[sample_scene[a["sample_token"]]].append(
            f"{a['sample_token']}/{a['instance_token']}/" + ",".join(f"{x:.3f}" for x in a["translation"] + a["size"]))
    return {n: hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()[:16] for n, rows in per.items()}


class Ablations:
    def __init__(self, settings: Settings, state: State, out_dir: Path, plan: list[Step],
                 runner: Runner = run_subprocess, publisher: Callable[["Ablations"], None] | None = None,
                 echo: Callable[[str], None] = print, only: Iterable[str] | None = None):
        self.settings, self.state, self.out_dir, self.plan = settings, state, out_dir, plan
        self.only = list(only) if only else None
        self.runner, self.publisher, self.echo = runner, publisher, echo

    # -- expected datasets -----------------------------------------------------------------------------------
    def expected_generator(self, stereo: bool) -> dict:
        s = self.settings
        return {"seed": s.world_seed, "scenes": s.scenes, "samples_per_scene": s.samples_per_scene,
                "image_scale": s.image_scale, "keyframes_only": True, "rig": "stereo_radar" if stereo else "nuscenes"}

    # -- the plan as text ------------------------------------------------------------------------------------
    def describe(self, step: Step) -> str:
        rec = self.state.get(step.key)
        status = rec.get("status", "pending")
        if step.kind == "data" and status != "done":
            st, _ = dataset_status(step.out, self.expected_generator(step.key == "data:stereo"))
            status = {"ok": "present", "missing": "to generate", "partial": "partial (will regenerate)"
                      if rec else "partial (error: not made by this run)", "mismatch": "mismatch (error)"}[st]
        elif step.kind == "train" and status != "done" and (step.out / "last.pt").exists():
            status += " (resumes from run/last.pt)" if rec.get("attempts") else " (stale run/ will be moved aside)"
        return status

    def dry_run(self) -> None:
        s = self.settings
        self.echo(f"ablations plan: {len(self.plan)} steps, {s.steps} steps x batch {batch_size()} per training, "
                  f"state {_rel(self.state.path)}")
        for step in self.plan:
            self.echo(f"[{self.describe(step)}] {step.key}")
            if step.cmd:
                self.echo(f"    GLIBC_TUNABLES=... {shlex.join(step.cmd)}")
            if step.log:
                self.echo(f"    log: {_rel(step.log)}")
            if step.key == "eval:main" and "calib_0" in select(self.only):
                self.echo("    (also the calib_0 row: calibration noise 0 is this evaluation)")

    # -- running ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run every step not done; returns the number of steps that failed or were blocked."""
        bad = 0
        for step in self.plan:
            if self.state.done(step.key):
                self.echo(f"[done] {step.key} (skipped)")
                continue
            missing = [d for d in step.deps if not self.state.done(d)]
            if missing:
                self.state.put(step.key, {"status": "blocked", "error": f"needs {', '.join(missing)} (not done)",
                                          "time": _now()})
                self.echo(f"[blocked] {step.key}: needs {', '.join(missing)}")
                bad += 1
                self._publish()
                continue
            self.echo(f"[run] {step.key}" + (f"  (log {_rel(step.log)})" if step.log else ""))
            try:
                ok = getattr(self, f"_run_{step.kind}")(step)
            except (Interrupted, KeyboardInterrupt):
                self._publish()
                raise
            except Exception as err:  # noqa: BLE001 - a bug in one step's bookkeeping must not lose the others
                self.state.put(step.key, {**self.state.get(step.key), "status": "failed",
                                          "error": f"{type(err).__name__}: {err}", "time": _now()})
                ok = False
            rec = self.state.get(step.key)
            self.echo(f"[{rec.get('status')}] {step.key}" + (f": {rec.get('error')}" if not ok else "")
                      + (f" ({rec['wall_s'] / 60:.1f} min)" if ok and rec.get("wall_s") else ""))
            bad += not ok
            self._publish()
        return bad

    def _publish(self) -> None:
        if self.publisher is not None:
            self.publisher(self)

    def _call(self, step: Step, cmd: list[str]) -> tuple[int, float]:
        t = time.time()
        rc = self.runner(cmd, step.log, child_env())
        return rc, time.time() - t

    def _run_data(self, step: Step) -> bool:
        stereo = step.key == "data:stereo"
        st, detail = dataset_status(step.out, self.expected_generator(stereo))
        rec = self.state.get(step.key)
        if st == "ok":
            self.state.put(step.key, {"status": "done", "root": _rel(step.out), "generated": bool(rec.get("started")),
                                      "wall_s": rec.get("wall_s", 0.0), "time": _now()})
            return True
        if st == "mismatch" or (st == "partial" and not rec.get("started")):
            self.state.put(step.key, {"status": "failed", "error": detail + "; choose another root or remove it",
                                      "time": _now()})
            return False
        cmd = list(step.cmd) + (["--overwrite"] if st == "partial" else [])
        self.state.put(step.key, {"status": "running", "started": _now(), "cmd": shlex.join(cmd)})
        try:
            rc, wall = self._call(step, cmd)
        except BaseException:
            self.state.put(step.key, {**self.state.get(step.key), "status": "interrupted"})
            raise
        st, detail = dataset_status(step.out, self.expected_generator(stereo))
        if rc == 0 and st == "ok":
            self.state.put(step.key, {"status": "done", "root": _rel(step.out), "generated": True, "wall_s": wall,
                                      "started": True, "time": _now()})
            return True
        self.state.put(step.key, {"status": "failed", "started": True, "wall_s": wall, "time": _now(),
                                  "error": error_from_log(step.log, rc) if rc else detail})
        return False

    def _run_check(self, step: Step) -> bool:
        a, b = (self.settings.root(False), self.settings.root(True))
        fa, fb = world_fingerprint(a), world_fingerprint(b)
        differ = sorted(n for n in set(fa) | set(fb) if fa.get(n) != fb.get(n))
        self.state.put(step.key, {"status": "done", "same": not differ, "scenes": len(fa), "differing": differ,
                                  "time": _now()})
        return True

    def _run_train(self, step: Step) -> bool:
        run_dir: Path = step.out
        rec = dict(self.state.get(step.key))
        attempts = list(rec.get("attempts", []))
        if rec.get("status") == "running":  # the orchestrator was killed mid-training: count what was kept
            attempts.append({"wall_s": _kept_s(run_dir, rec.get("started_ts")), "interrupted": True,
                             "note": "orchestrator stopped; counted up to the last checkpoint"})
        adopt = self._finished_run(run_dir) if attempts else None
        if adopt is None:
            resume = bool(attempts) and (run_dir / "last.pt").exists()
            if not attempts and run_dir.exists() and any(run_dir.iterdir()):
                stale = run_dir.with_name(f"run.stale-{time.strftime('%Y%m%d-%H%M%S')}")
                run_dir.rename(stale)
                self.echo(f"    {_rel(run_dir)} held a run this state does not know: moved to {_rel(stale)}")
            cmd = list(step.cmd) + (["--resume"] if resume else [])
            started = time.time()
            self.state.put(step.key, {"status": "running", "started_ts": started, "started": _now(),
                                      "attempts": attempts, "cmd": shlex.join(cmd), "resumed": resume})
            try:
                rc, wall = self._call(step, cmd)
            except BaseException:
                attempts.append({"wall_s": _kept_s(run_dir, started), "interrupted": True, "resumed": resume,
                                 "note": "interrupted; counted up to the last checkpoint"})
                self.state.put(step.key, {"status": "interrupted", "attempts": attempts, "time": _now()})
                raise
            attempts.append({"wall_s": wall, "rc": rc, "resumed": resume})
            adopt = self._finished_run(run_dir) if rc == 0 else None
            if adopt is None:
                err = error_from_log(step.log, rc) if rc else "perception-train exited 0 but run/model.pt or " \
                    f"run/summary.json with {self.settings.steps} steps is missing"
                self.state.put(step.key, {"status": "failed", "error": err, "attempts": attempts, "time": _now()})
                return False
        elif attempts and attempts[-1].get("interrupted"):
            attempts[-1]["note"] = "finished before the orchestrator stopped; counted to summary.json"
            attempts[-1]["wall_s"] = max(attempts[-1]["wall_s"], _kept_s(run_dir, rec.get("started_ts"),
                                                                            "summary.json"))
        self.state.put(step.key, {"status": "done", "checkpoint": _rel(run_dir / "model.pt"),
                                  "wall_s": sum(a["wall_s"] for a in attempts), "attempts": attempts,
                                  "train_minutes": adopt.get("minutes"), "steps": adopt.get("steps"),
                                  "train_eval": adopt.get("metrics"), "config_hash": adopt.get("config_hash"),
                                  "data_hash": adopt.get("data_hash"), "time": _now()})
        return True

    def _finished_run(self, run_dir: Path) -> dict | None:
        summary = run_dir / "summary.json"
        if not (summary.exists() and (run_dir / "model.pt").exists()):
            return None
        s = json.loads(summary.read_text())
        return s if int(s.get("steps", -1)) == self.settings.steps else None

    def _run_eval(self, step: Step) -> bool:
        out: Path = step.out
        for f in ("metrics_summary.json", "trajectory_metrics.json"):
            if (out / f).exists():
                (out / f).unlink()  # never read a previous attempt's figures
        self.state.put(step.key, {"status": "running", "started": _now(), "cmd": shlex.join(step.cmd)})
        try:
            rc, wall = self._call(step, list(step.cmd))
        except BaseException:
            self.state.put(step.key, {**self.state.get(step.key), "status": "interrupted"})
            raise
        if rc != 0 or not (out / "metrics_summary.json").exists():
            err = error_from_log(step.log, rc) if rc else "perception-test wrote no metrics_summary.json"
            self.state.put(step.key, {"status": "failed", "error": err, "wall_s": wall, "time": _now()})
            return False
        self.state.put(step.key, {"status": "done", "metrics": read_metrics(out), "wall_s": wall,
                                  "out": _rel(out), "time": _now()})
        return True


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _kept_s(run_dir: Path, started: float | None, name: str = "last.pt") -> float:
    """Wall time of an interrupted training attempt that its last checkpoint kept (0 if it saved none)."""
    f = run_dir / name
    if started is None or not f.exists():
        return 0.0
    return max(0.0, f.stat().st_mtime - float(started))


def read_metrics(out: Path) -> dict:
    m = json.loads((out / "metrics_summary.json").read_text())
    tp = m["tp_errors"]
    res = {"NDS": m["nd_score"], "mAP": m["mean_ap"], "mATE": tp["trans_err"], "mASE": tp["scale_err"],
           "mAOE": tp["orient_err"], "mAVE": tp["vel_err"], "mAAE": tp["attr_err"]}
    traj = out / "trajectory_metrics.json"
    if traj.exists():
        t = json.loads(traj.read_text())
        with contextlib.suppress(KeyError, TypeError):
            res["car_minADE6"] = t["model"]["car"]["minADE_6"]
            res["car_minADE6_cv"] = t["constant_velocity"]["car"]["minADE_6"]
            res["car_matched"] = t["model"]["car"]["matched"]
    return res


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------


def results_by_variant(steps: dict[str, dict]) -> dict[str, dict | None]:
    """Variant name -> metrics (None while not done). calib_0 is the main evaluation."""
    res: dict[str, dict | None] = {}
    for n in ALL_NAMES:
        key = "eval:main" if n == "calib_0" else f"eval:{n}"
        rec = steps.get(key, {})
        res[n] = rec.get("metrics") if rec.get("status") == "done" else None
    return res


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def target_rows(res: dict[str, dict | None], same_world: dict | None = None) -> list[list[str]]:
    """[target, figures, goal, status] with status met / missed / pending (a figure it needs is not there yet)
    or reported (no target, figures only)."""
    def m(name: str, key: str) -> float | None:
        r = res.get(name)
        return None if r is None else r.get(key)

    rows: list[list[str]] = []

    def d(x: float) -> float:  # judged on the figures as shown, not on float noise (0.50 - 0.45 = 0.04999...)
        return round(x, 6)

    def add(title: str, needs: Sequence[tuple[str, str]], figures: Callable[..., str], goal: str,
            test: Callable[..., bool] | None) -> None:
        vals = [m(n, k) for n, k in needs]
        if any(v is None for v in vals):
            have = ", ".join(f"{n} {k} {_f(v)}" for (n, k), v in zip(needs, vals) if v is not None)
            wait = ", ".join(sorted({n for (n, k), v in zip(needs, vals) if v is None}))
            rows.append([title, (have + "; " if have else "") + f"waiting for {wait}", goal, "pending"])
            return
        status = "reported" if test is None else ("**met**" if test(*vals) else "**missed**")
        rows.append([title, figures(*vals), goal, status])

    add("Fusion beats camera only", [("main", "NDS"), ("camera_only", "NDS")],
        lambda a, b: f"NDS {a:.3f} vs {b:.3f} (diff {a - b:+.3f})", "diff >= +0.10 NDS", lambda a, b: d(a - b) >= 0.10)
    add("Fusion beats radar only", [("main", "NDS"), ("radar_only", "NDS")],
        lambda a, b: f"NDS {a:.3f} vs {b:.3f} (diff {a - b:+.3f})", "diff >= +0.10 NDS", lambda a, b: d(a - b) >= 0.10)
    add("Radar improves velocity (mAVE)", [("main", "mAVE"), ("camera_only", "mAVE")],
        lambda a, b: f"mAVE {a:.3f} vs {b:.3f} (ratio {a / b:.2f})" if b else f"mAVE {a:.3f} vs {b:.3f}",
        "ratio <= 0.60", lambda a, b: d(a - 0.6 * b) <= 0)
    add("Cross-attention beats conv fusion", [("main", "NDS"), ("conv_fusion", "NDS")],
        lambda a, b: f"NDS {a:.3f} vs {b:.3f} (diff {a - b:+.3f})", "diff > 0", lambda a, b: a > b)
    add("Sync on beats sync off", [("main", "NDS"), ("sync_off", "NDS")],
        lambda a, b: f"NDS {a:.3f} vs {b:.3f} (diff {a - b:+.3f})", "diff >= +0.03 NDS", lambda a, b: d(a - b) >= 0.03)
    world = ""
    if same_world is not None:
        world = " (same world: yes)" if same_world.get("same") else \
            f" (worlds differ in {len(same_world.get('differing', []))} of {same_world.get('scenes')} scenes)"
    add("Stereo rig beats mono rig on mATE", [("stereo", "mATE"), ("main", "mATE")],
        lambda a, b: f"mATE stereo {a:.3f} vs mono {b:.3f} m{world}", "stereo < mono", lambda a, b: a < b)
    add("One camera dropped (CAM_FRONT)", [("main", "NDS"), ("drop_cam_front", "NDS")],
        lambda a, b: f"NDS {a:.3f} -> {b:.3f} (cost {a - b:.3f})", "cost < 0.05 NDS", lambda a, b: d(a - b) < 0.05)
    add("All radar dropped: a working camera-only detector",
        [("drop_all_radar", "NDS"), ("drop_all_radar", "mAP"), ("camera_only", "NDS")],
        lambda n, p, c: f"NDS {n:.3f} ({n / c:.0%} of camera_only's {c:.3f}), mAP {p:.3f}" if c else
        f"NDS {n:.3f}, mAP {p:.3f}",
        f"NDS >= {WORKING_NDS_FRACTION:.0%} of camera_only's and mAP >= {WORKING_MIN_MAP:.2f}",
        lambda n, p, c: d(n - WORKING_NDS_FRACTION * c) >= 0 and d(p) >= WORKING_MIN_MAP)
    add("Main model over 2 seeds", [("main", "NDS"), ("main_seed1", "NDS"), ("main", "mAP"), ("main_seed1", "mAP")],
        lambda a, b, c, d: f"NDS {(a + b) / 2:.3f} +/- {abs(a - b) / 2:.3f} (seeds 0/1: {a:.3f}/{b:.3f}); "
                           f"mAP {(c + d) / 2:.3f} +/- {abs(c - d) / 2:.3f}",
        "mean +/- half-range (differences below it are noise)", None)
    return rows


def _wall(rec: dict) -> str:
    return f"{rec['wall_s'] / 60:.1f}" if rec.get("status") == "done" and rec.get("wall_s") is not None else "-"


def variant_rows(steps: dict[str, dict]) -> list[list[str]]:
    res = results_by_variant(steps)
    rows = []
    for n in ROW_ORDER:
        if n in TRAIN_BY_NAME:
            title, train_key, eval_key = TRAIN_BY_NAME[n].title, f"train:{n}", f"eval:{n}"
        else:
            title, train_key = TEST_BY_NAME[n].title, None
            eval_key = "eval:main" if n == "calib_0" else f"eval:{n}"
        tr = steps.get(train_key, {}) if train_key else {}
        ev = steps.get(eval_key, {})
        r = res[n]
        if r is not None:
            status = "done (= main)" if n == "calib_0" else "done"
        else:
            failed = next(((k, s) for k, s in ((train_key, tr), (eval_key, ev)) if k and s.get("status") in
                           ("failed", "blocked", "interrupted", "running")), None)
            status = f"{failed[1]['status']} ({failed[0].split(':')[0]})" if failed else "pending"
        train_wall = _wall(tr) if train_key else "(main)"
        if r is None:
            rows.append([n, title, status, *["-"] * 6, train_wall, _wall(ev)])
        else:
            rows.append([n, title, status, f"**{_f(r.get('NDS'))}**", _f(r.get("mAP")), _f(r.get("mATE")),
                         _f(r.get("mAVE")), _f(r.get("mAOE")), _f(r.get("car_minADE6")), train_wall, _wall(ev)])
    return rows


def batch_size() -> int:
    try:
        from perception.config import load_config

        return load_config(REPO / MAIN_CONFIG).data.loader.batch_size
    except Exception:  # noqa: BLE001 - only used in the text
        return 4


def command_line(settings: Settings) -> str:
    """The command that reproduces ``settings`` (options at their defaults left out, except the data and budget)."""
    d = Settings()
    cmd = ["python", "-m", "benchmarks.ablations", "--dataroot", settings.dataroot, "--stereo-dataroot",
           settings.stereo_dataroot, "--steps", str(settings.steps)]
    for flag, attr in (("--world-seed", "world_seed"), ("--scenes", "scenes"),
                       ("--samples-per-scene", "samples_per_scene"), ("--image-scale", "image_scale")):
        if getattr(settings, attr) != getattr(d, attr):
            cmd += [flag, f"{getattr(settings, attr):g}"]
    for x in settings.extra_sets:
        cmd += ["--set", x]
    return shlex.join(cmd)


def markdown(settings: Settings, steps: dict[str, dict]) -> str:
    res = results_by_variant(steps)
    bs = batch_size()
    n_done = sum(r is not None for r in res.values())
    same = steps.get("check:same_world")
    same = same if same and same.get("status") == "done" else None
    errors = [f"- `{k}`: {v.get('error')}" for k, v in steps.items() if v.get("status") in ("failed", "blocked")]
    extra = " Extra overrides for every training: " + ", ".join(f"`{x}`" for x in settings.extra_sets) + "." \
        if settings.extra_sets else ""
    md = (
        "## Ablations (issue 10)\n\n"
        f"Command: `{command_line(settings)}` (resumable; see docs/ablations.md). {n_done} of "
        f"{len(res)} rows done; updated after every step.\n\n"
        f"Budget: every training runs **{settings.steps} steps x batch {bs}** ({settings.steps * bs} samples, "
        f"one-cycle schedule over the steps) from scratch on 2 CPU cores, seed 0 unless stated"
        + ("; the shipped checkpoint had 1400 steps, so these figures sit below it" if settings.steps < 1400 else "")
        + f".{extra} Data: `perception-synth --scenes "
        f"{settings.scenes} --samples-per-scene {settings.samples_per_scene} --seed {settings.world_seed} "
        f"--keyframes-only" + (f" --image-scale {settings.image_scale:g}" if settings.image_scale != 0.5 else "")
        + f"` (mono: `{settings.dataroot}`; stereo: the same world through "
        f"`{STEREO_RIG}`, `{settings.stereo_dataroot}`). Every row is scored by `perception-test` on `{SPLIT}` "
        "(nuscenes-devkit `DetectionEval`); car minADE6 on matched detections. Wall times in minutes as measured "
        "by the orchestrator: training (`--no-eval`: scored only by perception-test; a resumed training counts each "
        "interrupted attempt up to its last checkpoint), and the `perception-test` run.\n\n"
        + table(["variant", "what", "status", "NDS", "mAP", "mATE", "mAVE", "mAOE", "car minADE6",
                 "train wall", "eval wall"], variant_rows(steps))
        + "\n\nTargets (figures of `main` = cross-attention fusion, seed 0; `camera_only`, `radar_only`, "
          "`conv_fusion`, `sync_off` and `stereo` share its seed, budget and data; a difference smaller than the "
          "seed spread in the last row is within training noise):\n\n"
        + table(["target", "figures", "goal", "status"], target_rows(res, same))
        + "\n\nNotes: the mono counterpart of `stereo` is `main` (seed 0): the same world (same `perception-synth "
          "--seed`, scenes and samples) through the nuScenes mono rig, so no separate mono run is trained"
        + ("; the annotation fingerprints of the two roots " + ("match in every scene" if same["same"] else
                                                                 "differ in " + ", ".join(same["differing"]))
           if same else "")
        + ". \"Working\" camera-only detector = the main model with all five radars masked keeps at least "
          f"{WORKING_NDS_FRACTION:.0%} of the dedicated camera_only model's NDS and an mAP of at least "
          f"{WORKING_MIN_MAP:.2f}. Calibration noise rotates each sensor's extrinsic as the model sees it by the "
          "given angle (no target: the rows show the degradation). A missed target stays missed; the reason is "
          "written in docs/ablations.md (Findings), and the test data is never tuned to the model."
    )
    if errors:
        md += "\n\nFailed or blocked steps (logs under `benchmarks/out/ablations/<variant>/`):\n\n" + "\n".join(errors)
    return md


def publish_to(benchmarks_md: Path, json_dir: Path) -> Callable[[Ablations], None]:
    def publish(ab: Ablations) -> None:
        from benchmarks import report

        md = markdown(ab.settings, ab.state.steps)
        same = ab.state.get("check:same_world")
        results = {"settings": ab.settings.as_dict(), "batch_size": batch_size(),
                   "results": results_by_variant(ab.state.steps),
                   "targets": [dict(zip(("target", "figures", "goal", "status"), r)) for r in
                               target_rows(results_by_variant(ab.state.steps),
                                           same if same.get("status") == "done" else None)],
                   "steps": ab.state.steps}
        old = report.BENCHMARKS_MD
        report.BENCHMARKS_MD = Path(benchmarks_md)
        try:
            report.write(NAME, results, md, json_dir)
        finally:
            report.BENCHMARKS_MD = old
    return publish


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def state_lock(state_path: Path):
    import fcntl

    lock = state_path.with_name(state_path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"another ablations run holds {lock}; wait for it or stop it") from None
        f.write(str(os.getpid()))
        f.flush()
        yield


def _raise_interrupted(signum, _frame):
    raise Interrupted(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ablations", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", default="data/synth", help="mono (nuScenes rig) root; generated when missing")
    ap.add_argument("--stereo-dataroot", default="data/synth_stereo", help="stereo rig root of the same world")
    ap.add_argument("--steps", type=int, default=700, help="optimiser steps per training (x batch 4)")
    ap.add_argument("--state", default="benchmarks/out/ablations_state.json")
    ap.add_argument("--out-dir", default="benchmarks/out/ablations", help="logs, runs and test outputs")
    ap.add_argument("--benchmarks-md", default="docs/BENCHMARKS.md", help="where the table is published")
    ap.add_argument("--only", default="", help=f"comma-separated variants: {', '.join(ALL_NAMES)}")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--publish-only", action="store_true", help="publish the table from the state and exit")
    g = ap.add_argument_group("dataset (generation arguments; the shipped data's by default)")
    g.add_argument("--world-seed", type=int, default=0)
    g.add_argument("--scenes", type=int, default=60)
    g.add_argument("--samples-per-scene", type=int, default=20)
    g.add_argument("--image-scale", type=float, default=0.5)
    ap.add_argument("--set", dest="extra_sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override for every training (part of the settings; e.g. a smaller model for a smoke test)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    settings = Settings(steps=args.steps, dataroot=_rel(os.path.abspath(args.dataroot)),
                        stereo_dataroot=_rel(os.path.abspath(args.stereo_dataroot)), world_seed=args.world_seed,
                        scenes=args.scenes, samples_per_scene=args.samples_per_scene, image_scale=args.image_scale,
                        extra_sets=tuple(args.extra_sets))
    out_dir = Path(os.path.abspath(args.out_dir))
    state_path = Path(os.path.abspath(args.state))
    try:
        state = State(state_path, settings)
    except StateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plan = build_plan(settings, out_dir, args.only.split(",") if args.only else None)  # exits on unknown names
    publisher = publish_to(Path(os.path.abspath(args.benchmarks_md)), out_dir.parent)
    only = args.only.split(",") if args.only else None
    ab = Ablations(settings, state, out_dir, plan, publisher=publisher, only=only)
    if args.dry_run:
        ab.dry_run()
        return 0
    if args.publish_only:
        publisher(ab)
        print(markdown(settings, state.steps))
        return 0
    with state_lock(state_path):
        # stop cleanly on SIGTERM (and SIGHUP unless ignored, as under nohup): the child is stopped, the state saved
        old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)
               if signal.getsignal(s) is not signal.SIG_IGN}
        try:
            publisher(ab)
            bad = ab.run()
        except (Interrupted, KeyboardInterrupt) as err:
            print(f"interrupted ({err or 'Ctrl-C'}); the state is saved: rerun the same command to resume",
                  file=sys.stderr)
            return 130
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    print(markdown(settings, state.steps))
    print(f"\n{bad} step(s) failed or blocked; state {_rel(state_path)}" if bad else f"\nall steps done; state "
          f"{_rel(state_path)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
