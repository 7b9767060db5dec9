"""Procedural multimodal street scenes in the DeLiVER and MUSES formats (docs/design.md §9).

The real data sets cannot be downloaded here, so :func:`generate` writes look-alikes with the exact
folder layouts, file names and encodings of DeLiVER (docs/design.md §4.1) and of the MUSES SDK's
outputs (§4.2), for the loaders, training, evaluation and robustness benchmarks to run end to end. Like
the real data, the modalities are of *unequal quality* — the problem EQUISeg addresses: RGB and depth
are dense and informative, events and LiDAR sparse and weak.

Usage::

    from equiseg.data.synth import generate
    generate("data/synth", layout="deliver", splits={"train": 200, "val": 50}, size=(256, 256), seed=0)

or ``equiseg synth --out DIR --layout deliver --train 200 --val 50 --size 256 --seed 0``.

Scenes
------
A camera 1.45–1.9 m above a road (90° horizontal field of view, pitch −4…+1°, yaw ±7°) in one of
its right-hand lanes. World frame: X right, Y up, Z along the road. Classes (DeLiVER index → what it
is → Cityscapes train id used for MUSES):

==================  ==========================================================  ===================
Building (0)        boxes 4–45 m high along both sides, set back 0–7 m, windows   building (2)
                    in a grid of floors; sometimes a row across the far end
Fence (1)           1–1.9 m mesh panels (posts, rails, 25 cm mesh: see-through)   fence (4)
Pedestrian (3)      legs, torso, arms, head on sidewalks and crosswalks           person (11)
Pole (4)            street lamps (pole, arm, lamp head), sign and signal posts    pole (5)
RoadLine (5)        lane dashes, double yellow centre line, edge lines, zebra     road (0)
                    crossings, stop lines: paint on the road plane
Road (6)            asphalt plane Y = 0, with a side street at some crossings     road (0)
SideWalk (7)        paved plane raised by a 10–15 cm curb (curb faces included)   sidewalk (1)
Vegetation (8)      trees (trunk + leafy crown), hedges                           vegetation (8)
Cars (9)            body, glass cabin, wheels; driving in lanes and parked        car (13)
Wall (10)           0.7–2.2 m masonry walls in front of set-back buildings        wall (3)
TrafficSign (11)    plates on posts: red rings, blue disks, triangles, squares,   traffic sign (7)
                    yellow diamonds (cut-out shapes)
Sky (12)            everything not hit                                            sky (10)
TrafficLight (17)   signal heads at crossings (on a post or a mast arm)           traffic light (6)
Terrain (21)        grass beyond the sidewalks, in front yards and parks          terrain (9)
TwoWheeler (22)     parked bicycles and motorcycles                               bicycle/motorcycle
Bus (23)            long high box with a window band and wheels                   bus (15)
==================  ==========================================================  ===================

No pixel is unlabeled (raw 0) or ignore (255). Classes 2, 13–16, 18–20, 24 of DeLiVER (and rider,
truck, train of Cityscapes) never appear.

Modalities and what they can tell apart
---------------------------------------
- **RGB** (``img/…_rgb_front.png``, 8-bit): albedo × procedural texture × illumination (sun with
  hard cast shadows, sky light, street lamps at night), a 1/2.2 gamma and camera noise. Separates
  everything by day, including paint from asphalt; at night only lamp-lit areas and lights remain.
- **Depth** (``hha/`` and ``depth/…_depth_front.png``, 8-bit grey in all three channels): exact
  planar depth, ``code = round(255 · log(d / 1 m) / log(1000))`` (1 m → 0, 10 m → 85, 100 m → 170,
  sky and ≥ 1000 m → 255; ``d = 1000 ** (code / 255)``). Separates shapes (sky, ground, vertical
  objects, their silhouettes) under every condition but not paint: road, lane lines and (up to the
  curb) sidewalk at the same distance have the same depth.
- **Event** (``event/…_event_front.png``): polarity events from the log-brightness change over a
  short forward ego-motion (0.15–0.6 m, small yaw/pitch), computed from the exact depth: they fire
  on moving edges and textures, not on flat regions or near the focus of expansion; threshold
  mismatch, dark noise and hot pixels. Image: black background, negative events in R, positive in B,
  value ``85 · min(count, 3)``. Sparse (2–15 % of the pixels); shows edges, not classes.
- **LiDAR** (``lidar/…_lidar_front.png``): a 16-beam scanner (−22° to +8° elevation in 2° steps,
  0.2° azimuth steps, 100 m range) at the camera centre, projected into the image as thin curved scan
  lines (~4.5 px apart at 256², ~18 px at 1042²; nothing below −22°, i.e. on the nearest ~4 m of
  road). Per return: R = ``255 · (1 − range / 100 m)`` (≥ 1; 0 = no return), G = ``255 · intensity``
  (class-dependent reflectivity: paint and signs bright, glass and tyres absorbing), B =
  ``20 · (height + 1 m)``. Rain and snow add dropouts and near clutter, fog limits the range.
  Sparse: ~5 % of the pixels at 256², ~1.5 % at 1042².
- **MUSES layout**: ``frame_camera`` (RGB), ``gt_semantic`` (uint8 train ids), and
  ``projected_to_rgb/{lidar,radar,event_camera}`` as float32 H×W×3 ``.npz`` (``arr_0``) —
  lidar [range m, intensity 0–100, height m], radar [range m, RCS-like intensity, 0] (one return per
  1° azimuth bin from the nearest object 0.15–1.6 m high), events [positive count, negative count,
  0] — or, with ``muses_encoding="png"``, OpenCV-style uint16 PNGs (channel 0 in the file's blue
  channel; lidar/radar stored as ``(v + 100) · 150``, events raw). Zero where there is no
  measurement.

Conditions (DeLiVER folders; MUSES weathers × day/night)
--------------------------------------------------------
- ``sun`` / ``clear`` by day: strong low or high sun with hard cast shadows, blue sky.
- ``cloud``: overcast, soft light, cloudy sky.
- ``fog``: visibility 25–60 m: radiance blends exponentially with depth into a grey fog; the sky is
  fog; LiDAR range shrinks and catches droplets.
- ``rain``: dark overcast, wet ground (darker asphalt with a Fresnel sheen), light haze, rain streaks
  (which also trigger events), LiDAR dropouts and clutter.
- ``snow`` (MUSES): snow on upward surfaces (tyre tracks stay dark), falling flakes, haze.
- ``night``: no sun; street lamps light pools around them (and glow in the air), lit windows,
  head/tail and traffic lights; auto-exposure gain 5–8× with strong noise. RGB loses most of the
  scene; depth and LiDAR are unaffected; events get noisier.

Sensor failures (DeLiVER; the sequence folder's last ``_`` token, e.g. ``MAP_3_point2_motionblur``)
-------------------------------------------------------------------------------------------------
- ``motionblur``: RGB blurred along a line of 4–8 % of the width (mostly horizontal).
- ``overexposure`` / ``underexposure``: RGB gain ×3.5–7 (clipped highlights) / ×0.04–0.09 (dark,
  noisy).
- ``lidarjitter``: LiDAR returns displaced by N(0, 1 % of H) pixels, ranges by 5 %.
- ``eventlowres``: the event image is simulated and written at 1/4 resolution (the loader upsamples
  with nearest).

Failure samples also sit in a condition folder. With the defaults the cases cycle through the 5
conditions, the 5 failures and the 5 conditions again (a third of the samples are failures), so any
split of 10 or more samples contains all 10 DeLiVER cases; MUSES cycles through the 4 weathers by
day, then by night.

Modules
-------
:mod:`~equiseg.data.synth.streets` samples a street (its road users in
:mod:`~equiseg.data.synth.road_users`, shared helpers in :mod:`~equiseg.data.synth.placement`),
:mod:`~equiseg.data.synth.scene` ray casts it, :mod:`~equiseg.data.synth.render` shades it (light, weather,
the RGB camera; the look of a sample in :mod:`~equiseg.data.synth.look`, the surfaces in
:mod:`~equiseg.data.synth.materials`),
:mod:`~equiseg.data.synth.sensors` simulates depth, events, LiDAR and radar and their encodings,
:mod:`~equiseg.data.synth.pipeline` renders samples and writes the layouts.

Reproducibility
---------------
Sample ``i`` of split ``s`` is drawn from ``SeedSequence(seed, spawn_key=(crc32(s), i))``: it does
not depend on how many samples are generated, and the same seed writes byte-identical files. The
street is drawn before anything else, so the DeLiVER and MUSES data sets of one seed show the same
streets. Speed: a few hundred 256² samples per minute on one core (see the README).
"""

from equiseg.data.synth.pipeline import (
    DELIVER_CONDITIONS,
    DELIVER_FAILURES,
    LAYOUTS,
    MUSES_CONDITIONS,
    MUSES_ENCODINGS,
    MUSES_TIMES_OF_DAY,
    Case,
    Sample,
    case_of,
    deliver_case,
    deliver_schedule,
    generate,
    muses_case,
    muses_schedule,
    render_sample,
    sample_rng,
)
from equiseg.data.synth.scene import (
    BUILDING,
    BUS,
    CARS,
    FENCE,
    PEDESTRIAN,
    POLE,
    ROAD,
    ROADLINE,
    SIDEWALK,
    SKY,
    TERRAIN,
    TRAFFICLIGHT,
    TRAFFICSIGN,
    TWOWHEELER,
    VEGETATION,
    WALL,
)
from equiseg.data.synth.sensors import decode_depth, encode_depth

SYNTH_CLASSES: tuple[int, ...] = (
    BUILDING, FENCE, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION, CARS, WALL, TRAFFICSIGN, SKY,
    TRAFFICLIGHT, TERRAIN, TWOWHEELER, BUS,
)  # fmt: skip
"""DeLiVER class indices (0..24) that the generator draws."""

SYNTH_CLASS_NAMES: tuple[str, ...] = (
    "Building", "Fence", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk", "Vegetation", "Cars", "Wall",
    "TrafficSign", "Sky", "TrafficLight", "Terrain", "TwoWheeler", "Bus",
)  # fmt: skip

TO_CITYSCAPES: dict[int, tuple[int, ...]] = {
    BUILDING: (2,), FENCE: (4,), PEDESTRIAN: (11,), POLE: (5,), ROADLINE: (0,), ROAD: (0,),
    SIDEWALK: (1,), VEGETATION: (8,), CARS: (13,), WALL: (3,), TRAFFICSIGN: (7,), SKY: (10,),
    TRAFFICLIGHT: (6,), TERRAIN: (9,), TWOWHEELER: (17, 18), BUS: (15,),
}  # fmt: skip
"""DeLiVER class → the Cityscapes train id(s) written for MUSES (two-wheelers: motorcycle or bicycle)."""

__all__ = [
    "generate",
    "render_sample",
    "sample_rng",
    "deliver_schedule",
    "muses_schedule",
    "case_of",
    "deliver_case",
    "muses_case",
    "Case",
    "Sample",
    "encode_depth",
    "decode_depth",
    "LAYOUTS",
    "DELIVER_CONDITIONS",
    "DELIVER_FAILURES",
    "MUSES_CONDITIONS",
    "MUSES_TIMES_OF_DAY",
    "MUSES_ENCODINGS",
    "SYNTH_CLASSES",
    "SYNTH_CLASS_NAMES",
    "TO_CITYSCAPES",
]
