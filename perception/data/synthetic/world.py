"""The synthetic world: a road grid, buildings, an ego vehicle and actors of the 10 nuScenes detection classes.

Everything here is a deterministic function of the world seed, never of the rig: the same seed rendered
through two rigs shows the same drive. Time is continuous (``Scene.snapshot(t_us)``): sensors sample it at
their own capture times.

Frames: global x/y on the ground plane z = 0; boxes are ``[x, y, z, l, w, h, yaw]`` with z the box centre,
l along the heading, w across it (nuScenes reports sizes as ``[w, l, h]``; conversions are explicit).
Roads form a grid: roads along x at y = j * BLOCK and along y at x = i * BLOCK; right-hand traffic with two
lanes per direction (lane centres at +-1.75 m and +-5.25 m from the road centre line), a parking strip
from 7 m to the kerb at 9.5 m, then sidewalks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK = 120.0  # metres between parallel road centre lines
LANE = 3.5
ROAD_HALF = 9.5  # kerb: two 3.5 m lanes per direction (edge line at 7 m), then a 2.5 m parking strip
LANES_EDGE = 7.0
PARKING = (LANES_EDGE + ROAD_HALF) / 2  # centre of the parking strip
SIDEWALK = 3.5  # sidewalk width beyond the road edge
BUILDING_SETBACK = ROAD_HALF + SIDEWALK + 1.5

CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle",
           "pedestrian", "motorcycle", "bicycle", "traffic_cone", "barrier")

# nuScenes category written for each detection class (category_to_detection_name maps it back).
CATEGORY = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "trailer": "vehicle.trailer",
            "construction_vehicle": "vehicle.construction", "pedestrian": "human.pedestrian.adult",
            "motorcycle": "vehicle.motorcycle", "bicycle": "vehicle.bicycle",
            "traffic_cone": "movable_object.trafficcone", "barrier": "movable_object.barrier"}

# Mean size [l, w, h] and relative spread per class (nuScenes statistics, rounded).
SIZE_LWH = {"car": (4.62, 1.95, 1.73), "truck": (6.93, 2.51, 2.84), "bus": (11.2, 2.94, 3.47),
            "trailer": (12.3, 2.90, 3.87), "construction_vehicle": (6.37, 2.73, 3.19),
            "pedestrian": (0.73, 0.67, 1.77), "motorcycle": (2.11, 0.77, 1.47), "bicycle": (1.70, 0.60, 1.28),
            "traffic_cone": (0.41, 0.41, 1.07), "barrier": (0.50, 2.53, 0.98)}
SIZE_SPREAD = {"car": 0.08, "truck": 0.20, "bus": 0.10, "trailer": 0.15, "construction_vehicle": 0.15,
               "pedestrian": 0.08, "motorcycle": 0.08, "bicycle": 0.08, "traffic_cone": 0.10, "barrier": 0.10}
# Radar cross-section at 77 GHz (dBsm), mean over aspect; side-on views add SIDE_RCS_GAIN_DB. Published
# automotive measurements: car 5-15, pedestrian -10 to -5, bicycle -5 to 0, plastic traffic cone -20 to -10.
RCS_DBSM = {"car": 10.0, "truck": 18.0, "bus": 20.0, "trailer": 18.0, "construction_vehicle": 17.0,
            "pedestrian": -8.0, "motorcycle": 0.0, "bicycle": -5.0, "traffic_cone": -15.0, "barrier": 0.0,
            "building": 22.0, "pole": 6.0}
SIDE_RCS_GAIN_DB = 4.0
# detection_cvpr_2019 evaluation range per class (the devkit drops GT and predictions beyond it)
CLASS_RANGE = {"car": 50, "truck": 50, "bus": 50, "trailer": 50, "construction_vehicle": 50, "pedestrian": 40,
               "motorcycle": 40, "bicycle": 40, "traffic_cone": 30, "barrier": 30}

# Appearance kinds understood by the renderer (texture of a box part).
K_PLAIN, K_CABIN, K_BODY, K_BUS, K_CONE, K_BARRIER, K_BUILDING, K_CARGO, K_SKIN = range(9)

VEHICLE_PAINT = np.array([[230, 230, 232], [25, 25, 28], [160, 163, 168], [110, 112, 118], [150, 25, 30],
                          [30, 60, 140], [200, 200, 190], [60, 90, 60], [120, 80, 40], [210, 170, 40]], np.float32)


@dataclass
class SpeedProfile:
    """Piecewise-linear speed (m/s) through knots (seconds from scene start); distance is its integral."""

    times: np.ndarray
    speeds: np.ndarray

    def speed(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.times, self.speeds)

    def distance(self, t: np.ndarray) -> np.ndarray:
        """Metres travelled from time 0 (before the first knot speed is constant, as after the last)."""
        t = np.asarray(t, dtype=np.float64)
        tk, vk = self.times, self.speeds
        seg = np.concatenate([[0.0], np.cumsum(0.5 * (vk[1:] + vk[:-1]) * np.diff(tk))])  # distance at knots
        i = np.clip(np.searchsorted(tk, t, side="right") - 1, 0, len(tk) - 1)
        dt = t - tk[i]
        v0 = vk[i]
        slope = np.where(i < len(tk) - 1, (vk[np.minimum(i + 1, len(tk) - 1)] - v0)
                         / np.maximum(np.diff(np.r_[tk, tk[-1] + 1.0])[i], 1e-9), 0.0)
        before = t < tk[0]
        d = seg[i] + v0 * dt + 0.5 * slope * dt * dt
        return np.where(before, vk[0] * (t - tk[0]), d)


@dataclass
class Path:
    """A planar path of straight lines and circular arcs, parameterised by arc length."""

    starts: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (S, 2) start point of each segment
    headings: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,) start heading
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,)
    curvatures: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,) 1/radius, + = left turn

    def add(self, length: float, curvature: float = 0.0) -> "Path":
        if len(self.lengths):
            p, h = self.pose_at(np.array([self.lengths.sum()]))
            start, heading = p[0], float(h[0])
        else:
            raise ValueError("start the path with Path.begin")
        self.starts = np.vstack([self.starts, start])
        self.headings = np.r_[self.headings, heading]
        self.lengths = np.r_[self.lengths, length]
        self.curvatures = np.r_[self.curvatures, curvature]
        return self

    @classmethod
    def begin(cls, start: np.ndarray, heading: float, length: float) -> "Path":
        return cls(np.asarray(start, float)[None], np.array([heading]), np.array([length]), np.array([0.0]))

    @property
    def total(self) -> float:
        return float(self.lengths.sum())

    def pose_at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """s: (N,) arc length (clamped to the path; beyond the end it continues straight). Returns (N, 2), (N,)."""
        s = np.asarray(s, dtype=np.float64)
        ends = np.cumsum(self.lengths)
        i = np.minimum(np.searchsorted(ends, s, side="right"), len(self.lengths) - 1)
        local = s - (ends[i] - self.lengths[i])
        k = self.curvatures[i]
        h0 = self.headings[i]
        straight = np.abs(k) < 1e-12
        ks = np.where(straight, 1.0, k)
        dx = np.where(straight, local * np.cos(h0), (np.sin(h0 + k * local) - np.sin(h0)) / ks)
        dy = np.where(straight, local * np.sin(h0), (np.cos(h0) - np.cos(h0 + k * local)) / ks)
        # past the end of an arc segment at the path's end: continue along the final heading
        over = np.maximum(local - self.lengths[i], 0.0)
        heading = h0 + np.where(straight, 0.0, k * np.minimum(local, self.lengths[i]))
        if np.any(over > 0):
            end_local = np.minimum(local, self.lengths[i])
            dx = np.where(straight, dx, (np.sin(h0 + k * end_local) - np.sin(h0)) / ks) + over * np.cos(heading) * ~straight
            dy = np.where(straight, dy, (np.cos(h0) - np.cos(h0 + k * end_local)) / ks) + over * np.sin(heading) * ~straight
        return self.starts[i] + np.stack([dx, dy], axis=-1), heading


@dataclass
class Actor:
    """One annotated object. Motion: along ``path`` by ``profile`` plus a lateral offset ``lateral(t)``."""

    cls: str
    size_lwh: np.ndarray  # (3,)
    path: Path
    profile: SpeedProfile
    colour: np.ndarray  # (3,) main colour 0-255
    colour2: np.ndarray  # (3,) secondary colour (clothes, cargo, rider)
    lateral_amp: float = 0.0  # weaving amplitude (m)
    lateral_period: float = 3.0
    lateral_phase: float = 0.0
    lane_change: tuple[float, float, float] = (0.0, 1.0, 0.0)  # (t_start, duration, offset m)
    parked: bool = False
    has_rider: bool = True
    rcs_offset_db: float = 0.0

    def state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """t: (T,) seconds. Returns centre xy (T, 2), yaw (T,), velocity xy over ground (T, 2)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        eps = 0.05
        pos = self._xy(t)
        vel = (self._xy(t + eps) - self._xy(t - eps)) / (2 * eps)
        _, heading = self.path.pose_at(self.profile.distance(t))
        speed = np.linalg.norm(vel, axis=1)
        # a moving object faces where it goes (lateral moves included); a still one keeps its path heading
        yaw = np.where(speed > 0.3, np.arctan2(vel[:, 1], vel[:, 0]), heading)
        return pos, yaw, vel

    def _xy(self, t: np.ndarray) -> np.ndarray:
        s = self.profile.distance(t)
        p, h = self.path.pose_at(s)
        t0, dur, off = self.lane_change
        x = np.clip((t - t0) / max(dur, 1e-6), 0.0, 1.0)
        d = off * x * x * (3 - 2 * x)  # smoothstep lane change
        if self.lateral_amp:
            d = d + self.lateral_amp * np.sin(2 * np.pi * t / self.lateral_period + self.lateral_phase)
        normal = np.stack([-np.sin(h), np.cos(h)], axis=-1)
        return p + normal * d[:, None]


@dataclass
class Snapshot:
    """The world at one instant, in global coordinates.

    boxes: (B, 7) float64 renderable/reflecting boxes [x, y, z, l, w, h, yaw] (actor parts, buildings, poles).
    box_owner: (B,) int32 actor index, or -1 for scenery. box_kind: (B,) int32 appearance kind.
    box_colour: (B, 3) float32 base colour. box_rcs: (B,) float32 dBsm.
    actor_boxes: (A, 7) annotation boxes; actor_velocity: (A, 2) m/s over ground; actor_class: (A,) int.
    """

    t_us: int
    boxes: np.ndarray
    box_owner: np.ndarray
    box_kind: np.ndarray
    box_colour: np.ndarray
    box_rcs: np.ndarray
    actor_boxes: np.ndarray
    actor_velocity: np.ndarray
    actor_class: np.ndarray


def _parts(cls: str, l: float, w: float, h: float, has_rider: bool) -> list[tuple[float, float, float, float, float, float, int, int]]:
    """Visual parts of an actor in its own box frame: (cx, cy, cz_from_ground, l, w, h, kind, colour_slot).
    Every part lies inside the annotation box. colour_slot 0 = main colour, 1 = secondary, 2 = dark, 3 = skin."""
    if cls == "car":
        return [(0, 0, 0.3 * h, l, w, 0.6 * h, K_BODY, 0), (-0.05 * l, 0, 0.8 * h, 0.55 * l, 0.92 * w, 0.4 * h, K_CABIN, 0)]
    if cls in ("truck", "construction_vehicle"):
        cab = 0.28 * l
        return [(0.5 * l - cab / 2, 0, 0.5 * h, cab, w, h, K_CABIN, 0),
                (-cab / 2, 0, 0.55 * h, l - cab, w, 0.9 * h, K_CARGO, 1),
                (0, 0, 0.1 * h, l, w, 0.2 * h, K_BODY, 2)]
    if cls == "bus":
        return [(0, 0, 0.5 * h, l, w, h, K_BUS, 0)]
    if cls == "trailer":
        return [(0, 0, 0.6 * h, l, w, 0.8 * h, K_CARGO, 0), (0, 0, 0.1 * h, l * 0.9, w * 0.9, 0.2 * h, K_PLAIN, 2)]
    if cls == "pedestrian":
        return [(0, 0, 0.25 * h, 0.6 * l, 0.7 * w, 0.5 * h, K_PLAIN, 1), (0, 0, 0.66 * h, 0.7 * l, w, 0.32 * h, K_PLAIN, 0),
                (0, 0, 0.91 * h, 0.35 * l, 0.35 * w, 0.18 * h, K_SKIN, 3)]
    if cls in ("bicycle", "motorcycle"):
        parts = [(0, 0, 0.25 * h, l, 0.3 * w, 0.5 * h, K_PLAIN, 0 if cls == "motorcycle" else 2)]
        if has_rider:
            parts += [(-0.1 * l, 0, 0.72 * h, 0.35 * l, 0.9 * w, 0.55 * h, K_PLAIN, 1)]
        return parts
    if cls == "traffic_cone":
        return [(0, 0, 0.5 * h, l, w, h, K_CONE, 0)]
    if cls == "barrier":
        return [(0, 0, 0.5 * h, l, w, h, K_BARRIER, 0)]
    raise ValueError(cls)


@dataclass
class Scene:
    """One drive: the ego path and speed, scenery and actors, over ``duration_s`` seconds from ``t_start_us``."""

    t_start_us: int
    duration_s: float
    ego_path: Path
    ego_profile: SpeedProfile
    actors: list[Actor]
    scenery: np.ndarray  # (S, 7) static boxes
    scenery_kind: np.ndarray
    scenery_colour: np.ndarray
    scenery_rcs: np.ndarray
    sun: np.ndarray  # (3,) unit vector towards the sun
    name: str = "scene"

    def ego_pose(self, t_us: int) -> np.ndarray:
        """(4, 4) global_from_ego at t_us (ego origin on the ground under the rear axle)."""
        t = np.array([(t_us - self.t_start_us) * 1e-6])
        p, h = self.ego_path.pose_at(self.ego_profile.distance(t))
        c, s = np.cos(h[0]), np.sin(h[0])
        m = np.eye(4)
        m[:2, :2] = [[c, -s], [s, c]]
        m[:2, 3] = p[0]
        return m

    def ego_velocity(self, t_us: int) -> tuple[np.ndarray, float]:
        """Global velocity (2,) m/s of the ego origin and yaw rate (rad/s) at t_us."""
        t = (t_us - self.t_start_us) * 1e-6
        ts = np.array([t - 0.01, t + 0.01])
        p, h = self.ego_path.pose_at(self.ego_profile.distance(ts))
        return (p[1] - p[0]) / 0.02, float(np.angle(np.exp(1j * (h[1] - h[0])))) / 0.02

    def precompute(self, times_us: np.ndarray) -> None:
        """Evaluate every actor at all ``times_us`` at once (vectorised per actor); ``snapshot`` at one of these
        times is then a lookup. Exact, not interpolated."""
        times_us = np.unique(np.asarray(times_us, dtype=np.int64))
        t = (times_us - self.t_start_us) * 1e-6
        a_n = len(self.actors)
        pos = np.zeros((a_n, len(t), 2))
        yaw = np.zeros((a_n, len(t)))
        vel = np.zeros((a_n, len(t), 2))
        for i, a in enumerate(self.actors):
            pos[i], yaw[i], vel[i] = a.state(t)
        self._cache = ({int(x): k for k, x in enumerate(times_us)}, pos, yaw, vel)

    def _parts_table(self) -> tuple[np.ndarray, ...]:
        """All actor parts in their actors' frames, built once: local (P, 6) [x, y, z, l, w, h], owner (P,),
        kind (P,), colour (P, 3), rcs (P,)."""
        if getattr(self, "_parts", None) is None:
            local, owner, kind, colour, rcs = [], [], [], [], []
            for i, a in enumerate(self.actors):
                slots = np.stack([a.colour, a.colour2, np.array([35, 35, 38], np.float32),
                                  np.array([205, 160, 130], np.float32)])
                for (px, py, pz, pl, pw, ph, pk, slot) in _parts(a.cls, *a.size_lwh, a.has_rider):
                    local.append([px, py, pz, pl, pw, ph])
                    owner.append(i)
                    kind.append(pk)
                    colour.append(slots[slot])
                    rcs.append(RCS_DBSM[a.cls] + a.rcs_offset_db)
            self._parts = (np.array(local, float).reshape(-1, 6), np.array(owner, np.int32), np.array(kind, np.int32),
                           np.array(colour, np.float32).reshape(-1, 3), np.array(rcs, np.float32))
        return self._parts

    def snapshot(self, t_us: int) -> Snapshot:
        cache = getattr(self, "_cache", None)
        if cache is not None and int(t_us) in cache[0]:
            k = cache[0][int(t_us)]
            pos, yaw, vel = cache[1][:, k], cache[2][:, k], cache[3][:, k]
        else:
            t = np.array([(t_us - self.t_start_us) * 1e-6])
            states = [a.state(t) for a in self.actors]
            pos = np.array([s[0][0] for s in states]).reshape(-1, 2)
            yaw = np.array([s[1][0] for s in states]).reshape(-1)
            vel = np.array([s[2][0] for s in states]).reshape(-1, 2)
        size = np.array([a.size_lwh for a in self.actors]).reshape(-1, 3)
        actor_boxes = np.c_[pos, size[:, 2] / 2, size, yaw] if len(self.actors) else np.zeros((0, 7))
        actor_cls = np.array([CLASSES.index(a.cls) for a in self.actors], np.int64)
        local, owner, kind, colour, rcs = self._parts_table()
        c, s = np.cos(yaw[owner]), np.sin(yaw[owner])
        parts = np.c_[pos[owner, 0] + c * local[:, 0] - s * local[:, 1], pos[owner, 1] + s * local[:, 0] + c * local[:, 1],
                      local[:, 2:6], yaw[owner]]
        return Snapshot(int(t_us), np.concatenate([self.scenery, parts.reshape(-1, 7)]).astype(np.float64),
                        np.concatenate([np.full(len(self.scenery), -1, np.int32), owner]),
                        np.concatenate([self.scenery_kind, kind]).astype(np.int32),
                        np.concatenate([self.scenery_colour, colour]).astype(np.float32),
                        np.concatenate([self.scenery_rcs, rcs]).astype(np.float32), actor_boxes, vel, actor_cls)


# ---------------------------------------------------------------------------
# Scene generation
# ---------------------------------------------------------------------------

APPROACH = 12.0  # a turn starts this far before the crossing road's centre line
A_LAT_MAX = 2.5  # m/s^2 lateral acceleration the ego accepts in turns
A_ACC, A_BRAKE = 2.0, 3.0  # m/s^2


def _ego_route(rng: np.random.Generator, length_needed: float) -> Path:
    """An ego route on the grid: from inside a block, straight, then left/right/straight at intersections."""
    heading = float(rng.integers(0, 4)) * np.pi / 2
    lane = -1.75 if rng.random() < 0.6 else -5.25  # right-hand traffic: lanes right of the centre line
    i, j = rng.integers(4, 8, size=2)  # inside the region the map PNG covers (0 .. 12 blocks)
    along = float(rng.uniform(15.0, BLOCK - APPROACH - 15.0))
    fwd = np.array([np.cos(heading), np.sin(heading)])
    left = np.array([-fwd[1], fwd[0]])
    start = np.array([i * BLOCK, j * BLOCK], float) + fwd * along + left * lane
    path = Path.begin(start, heading, BLOCK - along - APPROACH)
    while path.total < length_needed + 50:
        turn = rng.choice(["straight", "straight", "left", "right"])
        if turn == "straight":
            path.add(BLOCK)
        else:
            # from lane offset `lane` on this road to the same offset on the crossing road
            radius = APPROACH - lane if turn == "left" else APPROACH + lane
            path.add(np.pi / 2 * radius, (1.0 if turn == "left" else -1.0) / radius)
            path.add(BLOCK - 2 * APPROACH)
    return path


def _ego_profile(rng: np.random.Generator, duration: float, path: Path) -> SpeedProfile:
    """Urban driving at 0-20 m/s: random target speeds and stops, acceleration limits, slowing for turns
    (lateral acceleration <= A_LAT_MAX). Simulated at 20 Hz."""
    dt = 0.05
    n = int((duration + 6.0) / dt) + 1
    knots_t = np.cumsum(rng.uniform(2.5, 6.0, 20))
    targets = rng.choice([0.0, 6.0, 10.0, 14.0, 18.0], size=20, p=[0.1, 0.2, 0.25, 0.25, 0.2]) \
        * rng.uniform(0.85, 1.1, 20)
    ends = np.cumsum(path.lengths)
    limits = [(ends[k] - path.lengths[k], np.sqrt(A_LAT_MAX / abs(path.curvatures[k])))
              for k in range(len(path.lengths)) if abs(path.curvatures[k]) > 1e-9]
    v = float(rng.choice([0.0, rng.uniform(4.0, 14.0)]))
    s = 0.0
    speeds = np.empty(n)
    stop_until = -1.0
    for step in range(n):
        t = step * dt
        speeds[step] = v
        k = int(np.searchsorted(knots_t, t))
        target = float(np.clip(targets[min(k, len(targets) - 1)], 0.0, 20.0))
        if target == 0.0 and v == 0.0 and stop_until < t:
            stop_until = t + float(rng.uniform(1.0, 3.0))
            targets[min(k, len(targets) - 1)] = 10.0  # drive on after the stop
        if t < stop_until:
            target = 0.0
        allowed = target
        for s_lim, v_lim in limits:  # brake in time for turns ahead, keep the limit inside them
            if s_lim - 2.0 <= s <= s_lim + np.pi / 2 * A_LAT_MAX / v_lim ** 2 * 20:
                allowed = min(allowed, v_lim)
            elif s < s_lim:
                allowed = min(allowed, np.sqrt(v_lim ** 2 + 2 * A_BRAKE * (s_lim - s)))
        v = float(np.clip(allowed, v - A_BRAKE * dt, v + A_ACC * dt))
        v = max(v, 0.0)
        s += v * dt
    return SpeedProfile(np.arange(n) * dt, speeds)


def _jitter_size(rng: np.random.Generator, cls: str) -> np.ndarray:
    base = np.array(SIZE_LWH[cls])
    return base * np.clip(1.0 + SIZE_SPREAD[cls] * rng.standard_normal(3), 0.7, 1.4)


def _colours(rng: np.random.Generator, cls: str) -> tuple[np.ndarray, np.ndarray]:
    if cls in ("car", "truck", "bus", "trailer", "motorcycle"):
        main = VEHICLE_PAINT[rng.integers(len(VEHICLE_PAINT))]
    elif cls == "construction_vehicle":
        main = np.array([235, 170, 20], np.float32)
    elif cls == "traffic_cone":
        main = np.array([240, 110, 20], np.float32)
    elif cls == "barrier":
        main = np.array([235, 235, 235], np.float32)
    elif cls == "bicycle":
        main = np.array([40, 40, 40], np.float32)
    else:  # pedestrian: shirt
        main = rng.uniform(20, 230, 3).astype(np.float32)
    second = rng.uniform(20, 200, 3).astype(np.float32)  # trousers / cargo / rider clothes
    main = np.clip(main * rng.uniform(0.85, 1.1), 0, 255).astype(np.float32)
    return main, second


def _still(t_end: float) -> SpeedProfile:
    return SpeedProfile(np.array([0.0, t_end]), np.array([0.0, 0.0]))


def _traffic_profile(rng: np.random.Generator, duration: float, v_max: float) -> SpeedProfile:
    """Cruise, maybe stop and go."""
    v = float(rng.uniform(0.4, 1.0) * v_max)
    if rng.random() < 0.3:
        t1 = float(rng.uniform(1, duration))
        t2 = t1 + float(rng.uniform(1.5, 4.0))
        t3 = t2 + float(rng.uniform(1.0, 4.0))
        return SpeedProfile(np.array([0.0, t1, t2, t3, t3 + 4.0]), np.array([v, v, 0.0, 0.0, v]))
    return SpeedProfile(np.array([0.0, duration]), np.array([v, float(np.clip(v + rng.normal(0, 1.5), 0, v_max))]))


N_DISCS = 5


def _discs(box: np.ndarray) -> np.ndarray:
    """(T, 7) boxes -> (T, N_DISCS, 3) discs (x, y, r) along each box covering its footprint (0.15 m clearance)."""
    x, y, l, w, yaw = box[:, 0], box[:, 1], box[:, 3], box[:, 4], box[:, 6]
    r = np.hypot(w / 2.0, l / (2.0 * N_DISCS)) + 0.15
    offs = (np.arange(N_DISCS) + 0.5 - N_DISCS / 2) / N_DISCS * l[:, None]  # (T, N_DISCS) disc centres along l
    cx = x[:, None] + offs * np.cos(yaw)[:, None]
    cy = y[:, None] + offs * np.sin(yaw)[:, None]
    return np.stack([cx, cy, np.repeat(r[:, None], N_DISCS, axis=1)], axis=-1)


def _collides(a: np.ndarray, b: np.ndarray) -> bool:
    """a, b: (T, N, 3) disc sets over time -> any overlap at any time."""
    d = np.linalg.norm(a[:, :, None, :2] - b[:, None, :, :2], axis=-1)
    return bool(np.any(d < a[:, :, None, 2] + b[:, None, :, 2]))


class _Placer:
    """Places actors on roads near the ego's route, rejecting any that would overlap another or the ego."""

    def __init__(self, rng: np.random.Generator, duration: float, ego_path: Path, ego_profile: SpeedProfile,
                 key_times: np.ndarray):
        self.rng = rng
        self.duration = duration
        self.times = np.linspace(0.0, duration, max(int(duration * 4) + 1, 2))  # collision checks at 4 Hz
        self.ego_xy, self.ego_h = ego_path.pose_at(ego_profile.distance(self.times))
        self.key_times = key_times
        self.key_ego_xy, _ = ego_path.pose_at(ego_profile.distance(key_times))
        fwd = np.c_[np.cos(self.ego_h), np.sin(self.ego_h)]
        ego_box = np.c_[self.ego_xy + 1.4 * fwd, np.zeros(len(self.times)), np.full(len(self.times), 4.9),
                        np.full(len(self.times), 2.0), np.ones(len(self.times)), self.ego_h]
        self.placed = [_discs(ego_box)]
        self.actors: list[Actor] = []

    def road_near_ego(self) -> tuple[np.ndarray, float, float]:
        """The road the ego is on at a random instant (not mid-turn): (centre-line origin, heading, ego's s)."""
        for _ in range(50):
            k = int(self.rng.integers(len(self.times)))
            h = self.ego_h[k]
            snapped = round(h / (np.pi / 2)) * (np.pi / 2)
            if abs(np.angle(np.exp(1j * (h - snapped)))) < 0.05:
                break
        fwd = np.array([np.cos(snapped), np.sin(snapped)])
        left = np.array([-fwd[1], fwd[0]])
        p = self.ego_xy[k]
        across = float(p @ left)
        origin = p + left * (round(across / BLOCK) * BLOCK - across) - fwd * 2 * BLOCK
        return origin, float(snapped), 2 * BLOCK

    def add(self, cls: str, origin: np.ndarray, heading: float, s0: float, offset: float, profile: SpeedProfile,
            reverse: bool = False, **kw) -> bool:
        fwd = np.array([np.cos(heading), np.sin(heading)])
        left = np.array([-fwd[1], fwd[0]])
        path = Path.begin(origin + fwd * s0 + left * offset, heading + (np.pi if reverse else 0.0), 10 * BLOCK)
        main, second = _colours(self.rng, cls)
        actor = Actor(cls, _jitter_size(self.rng, cls), path, profile, main, second, **kw)
        pos, yaw, _ = actor.state(self.times)
        l, w, h = actor.size_lwh
        n = len(self.times)
        discs = _discs(np.c_[pos, np.full(n, h / 2), np.full(n, l), np.full(n, w), np.full(n, h), yaw])
        if any(_collides(discs, other) for other in self.placed):
            return False
        self.placed.append(discs)
        self.actors.append(actor)
        return True

    def count_near(self, cls: str, radius: float) -> int:
        """Actors of ``cls`` within ``radius`` metres of the ego at some key frame time."""
        n = 0
        for a in self.actors:
            if a.cls == cls:
                pos, _, _ = a.state(self.key_times)
                n += bool(np.min(np.linalg.norm(pos - self.key_ego_xy, axis=1)) < radius)
        return n


def _populate(pl: _Placer, duration: float) -> None:
    rng = pl.rng
    lanes_same, lanes_opp = (-1.75, -5.25), (1.75, 5.25)
    # a construction zone: cones and barriers closing part of a kerb lane, a construction vehicle in it
    for _ in range(10):
        origin, heading, s_ego = pl.road_near_ego()
        side = float(rng.choice([-1.0, 1.0]))
        s_zone = s_ego + float(rng.uniform(-10, 40))
        ok = pl.add("construction_vehicle", origin, heading, s_zone + 6.0, side * PARKING,
                    _still(duration + 10), reverse=side > 0, parked=True)
        if ok:
            for n in range(int(rng.integers(5, 10))):
                pl.add("traffic_cone", origin, heading, s_zone + 2.5 * n - 3.0,
                       side * (LANES_EDGE - 0.4 + 0.15 * rng.standard_normal()), _still(duration + 10))
            fwd = np.array([np.cos(heading), np.sin(heading)])
            left = np.array([-fwd[1], fwd[0]])
            for n in range(int(rng.integers(3, 6))):  # a line of barriers along the kerb: long side along the road
                pos = origin + fwd * (s_zone - 2.0 - 3.3 * n) + left * side * (ROAD_HALF + 0.5)
                pl.add("barrier", pos, heading + np.pi / 2, 0.0, 0.0, _still(duration + 10))
            break
    # parked vehicles at the kerbs
    for cls, count in (("trailer", 1), ("truck", 1), ("car", int(rng.integers(4, 9)))):
        for _ in range(count * 6):
            if sum(a.cls == cls and a.parked for a in pl.actors) >= count:
                break
            origin, heading, s_ego = pl.road_near_ego()
            side = float(rng.choice([-1.0, 1.0]))
            pl.add(cls, origin, heading, s_ego + float(rng.uniform(-30, 60)), side * PARKING, _still(duration + 10),
                   reverse=side > 0, parked=True)
    # pedestrians crossing, walking the sidewalks, standing
    for _ in range(int(rng.integers(8, 16))):
        mode = rng.choice(["cross", "walk", "stand"], p=[0.3, 0.45, 0.25])
        origin, heading, s_ego = pl.road_near_ego()
        fwd = np.array([np.cos(heading), np.sin(heading)])
        left = np.array([-fwd[1], fwd[0]])
        side = float(rng.choice([-1.0, 1.0]))
        s0 = s_ego + float(rng.uniform(-10, 60))
        speed = float(rng.uniform(0.8, 1.7))
        kw = dict(lateral_amp=0.04, lateral_period=1.1, lateral_phase=float(rng.uniform(0, 6.3)))
        if mode == "cross":
            t_go = float(rng.uniform(0, duration * 0.7))
            prof = SpeedProfile(np.array([0.0, t_go, t_go + 1.0]), np.array([0.0, 0.0, speed]))
            start = origin + fwd * s0 + left * side * (ROAD_HALF + 1.5)
            pl.add("pedestrian", start, heading - side * np.pi / 2, 0.0, 0.0, prof, **kw)
        elif mode == "walk":
            prof = SpeedProfile(np.array([0.0, duration]), np.array([speed, speed]))
            pl.add("pedestrian", origin, heading, s0, side * (ROAD_HALF + float(rng.uniform(0.8, SIDEWALK - 0.5))),
                   prof, reverse=rng.random() < 0.5, **kw)
        else:
            pl.add("pedestrian", origin, heading, s0, side * (ROAD_HALF + float(rng.uniform(0.5, SIDEWALK))),
                   _still(duration + 10), reverse=rng.random() < 0.5, **kw)
    # cyclists and motorcyclists in the kerb lanes, weaving; parked cycles on the sidewalk
    for cls in ("bicycle", "bicycle", "motorcycle", "motorcycle"):
        for _ in range(8):
            origin, heading, s_ego = pl.road_near_ego()
            opp = rng.random() < 0.4
            off = (6.3 if opp else -6.3) + 0.15 * float(rng.standard_normal())
            s0 = s_ego + float(rng.uniform(40, 200) if opp else rng.uniform(-20, 100))
            prof = _traffic_profile(rng, duration, 6.0 if cls == "bicycle" else 12.0)
            if pl.add(cls, origin, heading, s0, off, prof, reverse=opp, lateral_amp=float(rng.uniform(0.1, 0.3)),
                      lateral_period=float(rng.uniform(2.0, 4.0)), lateral_phase=float(rng.uniform(0, 6.3))):
                break
    for cls in ("bicycle", "motorcycle"):
        for _ in range(6):
            origin, heading, s_ego = pl.road_near_ego()
            side = float(rng.choice([-1.0, 1.0]))
            if pl.add(cls, origin, heading, s_ego + float(rng.uniform(-10, 40)), side * (ROAD_HALF + 0.7),
                      _still(duration + 10), parked=True, has_rider=False):
                break
    # moving traffic on the ego's roads, both directions, some changing lanes
    n_traffic = int(rng.integers(12, 22))
    n_before = len(pl.actors)
    for _ in range(n_traffic * 3):
        if len(pl.actors) - n_before >= n_traffic:
            break
        cls = str(rng.choice(["car", "car", "car", "car", "truck", "bus"]))
        origin, heading, s_ego = pl.road_near_ego()
        opp = rng.random() < 0.45
        off = float(rng.choice(lanes_opp if opp else lanes_same))
        s0 = s_ego + float(rng.uniform(60, 260) if opp else rng.uniform(-60, 160))
        lc = (0.0, 1.0, 0.0)
        if rng.random() < 0.15:  # change to the other lane of the same direction
            lc = (float(rng.uniform(0, duration)), float(rng.uniform(2.5, 4.0)),
                  float((-LANE if abs(off) > 3 else LANE) * (1 if off > 0 else -1) * (-1 if opp else 1)))
        pl.add(cls, origin, heading, s0, off, _traffic_profile(rng, duration, 14.0 if cls == "car" else 11.0),
               reverse=opp, lane_change=lc)
    # every class at least once well inside its evaluation range of the ego (a scene alone may form a
    # validation split, and a class without evaluable GT scores AP 0)
    for cls in CLASSES:
        for attempt in range(60):
            if pl.count_near(cls, 0.5 * CLASS_RANGE[cls]) > 0:
                break
            origin, heading, s_ego = pl.road_near_ego()
            side = float(rng.choice([-1.0, 1.0]))
            if cls in ("traffic_cone", "barrier", "pedestrian", "bicycle"):
                pl.add(cls, origin, heading, s_ego + float(rng.uniform(-15, 25)),
                       side * (ROAD_HALF + float(rng.uniform(0.5, SIDEWALK - 0.5))), _still(duration + 10),
                       parked=True, has_rider=False)
            elif attempt % 2 == 0:  # parked at the kerb
                pl.add(cls, origin, heading, s_ego + float(rng.uniform(-15, 25)), side * PARKING,
                       _still(duration + 10), reverse=side > 0, parked=True, has_rider=False)
            else:  # oncoming traffic that passes the ego
                v = float(rng.uniform(3.0, 9.0))
                pl.add(cls, origin, heading, s_ego + float(rng.uniform(0.0, 0.6)) * v * duration + 10.0,
                       float(rng.choice([1.75, 5.25])), SpeedProfile(np.array([0.0, duration]), np.array([v, v])),
                       reverse=True)


def _scenery(rng: np.random.Generator, ego_xy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Buildings along every road within reach of the route (setback from the kerb, clear of intersections)
    and poles at the kerbs every 25 m. Returns boxes (S, 7), kinds, colours, RCS."""
    lo = np.floor((ego_xy.min(0) - 150.0) / BLOCK) * BLOCK
    hi = np.ceil((ego_xy.max(0) + 150.0) / BLOCK) * BLOCK
    boxes, kinds, cols, rcs = [], [], [], []
    for axis in (0, 1):  # roads along x (axis 0) at y = k * BLOCK, and along y
        for c in np.arange(lo[1 - axis], hi[1 - axis] + 1, BLOCK):
            for side in (-1.0, 1.0):
                s = lo[axis] + float(rng.uniform(0, 10))
                while s < hi[axis]:
                    bl, bd, bh = float(rng.uniform(10, 35)), float(rng.uniform(10, 25)), float(rng.uniform(6, 30))
                    centre_along = s + bl / 2
                    d_cross = ((centre_along + BLOCK / 2) % BLOCK) - BLOCK / 2
                    if abs(d_cross) > BUILDING_SETBACK + bl / 2 + bd / 2:
                        across = c + side * (BUILDING_SETBACK + bd / 2)
                        xy = (centre_along, across) if axis == 0 else (across, centre_along)
                        boxes.append([xy[0], xy[1], bh / 2, bl, bd, bh, 0.0 if axis == 0 else np.pi / 2])
                        kinds.append(K_BUILDING)
                        cols.append(rng.uniform(90, 210, 3) * np.array([1.0, 0.95, 0.9]))
                        rcs.append(RCS_DBSM["building"])
                    s += bl + float(rng.uniform(1, 8))
                for s in np.arange(lo[axis] + float(rng.uniform(0, 25)), hi[axis], 25.0):
                    if abs(((s + BLOCK / 2) % BLOCK) - BLOCK / 2) > ROAD_HALF + SIDEWALK:
                        across = c + side * (ROAD_HALF + 0.4)
                        xy = (s, across) if axis == 0 else (across, s)
                        boxes.append([xy[0], xy[1], 3.0, 0.25, 0.25, 6.0, 0.0])
                        kinds.append(K_PLAIN)
                        cols.append([70, 72, 75])
                        rcs.append(RCS_DBSM["pole"])
    return (np.array(boxes, float).reshape(-1, 7), np.array(kinds, np.int32), np.array(cols, np.float32).reshape(-1, 3),
            np.array(rcs, np.float32))


def generate_scene(seed: int, index: int, duration_s: float, t_start_us: int,
                   key_times_s: np.ndarray | None = None, attempt: int = 0) -> Scene:
    """Scene ``index`` of a dataset with world seed ``seed``: a pure function of its arguments (never of a rig).
    ``key_times_s`` (seconds from the start) are the annotated instants: every class is placed near the ego at
    one of them (default: every 0.5 s). ``attempt`` > 0 draws another world for the same scene slot."""
    rng = np.random.default_rng([seed, index, 0xC0FFEE] + ([attempt] if attempt else []))
    # route length: enough for 20 m/s over the whole scene
    ego_path = _ego_route(rng, 20.0 * (duration_s + 6.0))
    ego_profile = _ego_profile(rng, duration_s, ego_path)
    if key_times_s is None:
        key_times_s = np.arange(0.5, duration_s, 0.5)
    placer = _Placer(rng, duration_s, ego_path, ego_profile, np.asarray(key_times_s, dtype=np.float64))
    _populate(placer, duration_s)
    boxes, kinds, cols, rcs = _scenery(rng, placer.ego_xy)
    sun_az, sun_el = float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.35, 1.1))
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    return Scene(t_start_us, duration_s, ego_path, ego_profile, placer.actors, boxes, kinds, cols, rcs, sun,
                 name=f"scene-{index:04d}")
