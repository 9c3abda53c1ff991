"""Procedural talking-head videos: a synthetic dataset with ground-truth pose.

A head is a textured ellipsoid (skin, hair cap, eyes, brows, mouth painted on its
surface) with a protruding nose ellipsoid, two ear ellipsoids, a hair volume behind it,
a neck, shoulders and a static background. Each frame ray-casts the ellipsoids in
closed form (orthographic camera), so the features move with the true 3D rotation:
under yaw the face features slide faster than the outline and the nose and ears
occlude (parallax). Edges are anti-aliased analytically (about one pixel of smooth
coverage), so frames are smooth images.

Motion is smooth: yaw, pitch, roll, translation and zoom are sums of sinusoids with
random phases, plus nods; the mouth opens and closes at syllable rate under a talk/pause
envelope; the eyes blink; gaze and eyebrows drift. Everything is deterministic from the
parameters, and the parameters from a seed.

Coordinates: the image spans [-1, 1] in x (left to right) and y (bottom to top).
Angles in degrees: yaw > 0 turns the face towards the image right, pitch > 0 lifts the
chin, roll > 0 tilts the head counter-clockwise in the image.

API: :func:`sample_identity`, :func:`sample_motion` (JSON-able dicts),
:func:`render_video` (uint8 (F, S, S, 3)), :func:`frame_parameters` (per-frame ground
truth), :func:`write_dataset` (FOMM layout + JSON metadata), :func:`main` (the CLI).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = [
    "SKIN_TONES",
    "HAIR_COLOURS",
    "HAIR_STYLES",
    "sample_identity",
    "sample_motion",
    "motion_at",
    "render_video",
    "frame_parameters",
    "write_dataset",
    "FPS_RANGE",
    "main",
]

_VERSION = 1
SKIN_TONES = ((0.98, 0.84, 0.74), (0.90, 0.70, 0.56), (0.76, 0.55, 0.40), (0.56, 0.37, 0.24), (0.34, 0.22, 0.15))
HAIR_COLOURS = (
    (0.07, 0.06, 0.05), (0.22, 0.14, 0.08), (0.42, 0.27, 0.14), (0.80, 0.66, 0.38),
    (0.58, 0.24, 0.10), (0.62, 0.62, 0.62), (0.90, 0.89, 0.86), (0.20, 0.25, 0.55),
)
IRIS_COLOURS = ((0.30, 0.18, 0.08), (0.20, 0.38, 0.62), (0.25, 0.45, 0.25), (0.10, 0.08, 0.07), (0.45, 0.40, 0.30))
HAIR_STYLES = ("bald", "short", "medium", "long")
LANDMARKS = ("eye_left", "eye_right", "nose_tip", "mouth", "chin", "head_centre")


# ----------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------
def _colour(rng: np.random.Generator, base, jitter: float) -> list[float]:
    c = np.clip(np.asarray(base, dtype=np.float64) + rng.uniform(-jitter, jitter, 3), 0.0, 1.0)
    return [round(float(v), 4) for v in c]


def _mix(rng: np.random.Generator, palette) -> np.ndarray:
    t = rng.uniform(0, len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    f = t - i
    return (1 - f) * np.asarray(palette[i]) + f * np.asarray(palette[i + 1])


def sample_identity(rng: np.random.Generator) -> dict:
    """Random appearance of one synthetic person: head shape and size, skin/hair/eye
    colours, hair style, feature placement, clothes, background, light (a JSON-able
    dict of floats, lists and strings)."""
    u = rng.uniform
    a = u(0.29, 0.40)
    style = HAIR_STYLES[int(rng.choice(4, p=[0.15, 0.35, 0.3, 0.2]))]
    skin = _colour(rng, _mix(rng, SKIN_TONES), 0.03)
    hair = _colour(rng, HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))], 0.05)
    bg = [_colour(rng, rng.uniform(0.1, 0.9, 3), 0.0) for _ in range(2)]
    blobs = [
        {"centre": [round(float(v), 4) for v in u(-1.1, 1.1, 2)], "radius": round(float(u(0.15, 0.6)), 4),
         "softness": round(float(u(0.02, 0.3)), 4), "colour": _colour(rng, u(0.05, 0.95, 3), 0.0)}
        for _ in range(int(rng.integers(2, 6)))
    ]
    eye_x = u(0.30, 0.42)
    eye_rx = u(0.11, 0.16)
    return {
        "head_axes": [a, a * u(1.15, 1.40), a * u(0.9, 1.1)],
        "head_centre": [u(-0.1, 0.1), u(0.02, 0.16)],
        "skin": skin,
        "hair": hair,
        "hair_style": style,
        "hairline": [u(0.25, 0.55), u(-0.3, 0.5)],  # v = h0 + h1 * u^2 on the unit sphere
        "hair_stripes": u(15.0, 45.0),
        "eye": [eye_x, u(0.06, 0.2), eye_rx, eye_rx * u(0.45, 0.65)],  # x, y, rx, ry (unit sphere)
        "iris": _colour(rng, IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))], 0.04),
        "iris_radius": u(0.75, 1.0),  # fraction of the eye's ry
        "brow": [u(0.12, 0.2), u(0.018, 0.035), u(0.3, 2.5)],  # height above the eye, half thickness, arch
        "brow_colour": _colour(rng, np.asarray(hair) * 0.7, 0.02),
        "nose": [u(0.08, 0.13), u(0.17, 0.27), u(0.16, 0.26), u(-0.2, -0.08)],  # w, l, depth (head a/b/c units), y
        "mouth": [u(-0.52, -0.42), u(0.2, 0.3), u(0.025, 0.045)],  # y, half width, lip thickness
        "lips": _colour(rng, np.asarray(skin) * np.array([0.85, 0.55, 0.55]) + np.array([0.08, 0.0, 0.02]), 0.03),
        "ear": [u(0.22, 0.34), u(-0.12, 0.08)],  # height (b units), y (b units)
        "neck_width": u(0.42, 0.6),  # a units
        "torso": [u(2.2, 3.2), u(0.9, 1.3)],  # rx (a units), ry (b units)
        "shirt": _colour(rng, u(0.05, 0.95, 3), 0.0),
        "background": bg,
        "background_angle": u(0, 2 * math.pi),
        "blobs": blobs,
        "light": [u(-0.6, 0.6), u(0.0, 0.7), 1.0],
        "ambient": u(0.35, 0.55),
    }


def _sines(rng: np.random.Generator, n: int, amp: tuple[float, float], freq: tuple[float, float]) -> dict:
    return {"amp": rng.uniform(*amp, n).round(5).tolist(), "freq": rng.uniform(*freq, n).round(5).tolist(),
            "phase": rng.uniform(0, 2 * math.pi, n).round(5).tolist()}


#: Frame rates accepted by :func:`write_dataset` and ``--fps`` (frames per second).
FPS_RANGE = (1.0, 240.0)
#: The longest motion :func:`sample_motion` draws (seconds; one day).
MAX_DURATION = 86400.0


def _is_number(value) -> bool:
    """A real number (Python or numpy; not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _check_fps(fps) -> None:
    lo, hi = FPS_RANGE
    if not _is_number(fps) or not lo <= fps <= hi:
        raise ValueError(f"fps must be a number in [{lo:g}, {hi:g}], got {fps!r}")


def _check_duration(duration) -> None:
    if not _is_number(duration) or not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be > 0 and <= {MAX_DURATION:g} seconds, got {duration!r}")


def _check_head_motion(head_motion) -> None:
    if isinstance(head_motion, bool) or not isinstance(head_motion, (int, float)) \
            or not math.isfinite(head_motion) or head_motion < 0:
        raise ValueError(f"head_motion must be a finite number >= 0, got {head_motion!r}")


def sample_motion(rng: np.random.Generator, duration: float, head_motion: float = 1.0) -> dict:
    """Random smooth motion over ``duration`` seconds: sums of sinusoids (degrees for
    angles, image half-widths for translation), a talk envelope and syllables for the
    mouth, blink times, gaze and eyebrow drift (a JSON-able dict).

    ``head_motion`` (>= 0) multiplies the amplitudes of the head pose (yaw, pitch, nod,
    roll, translation, zoom); 1 is a calm speaker, 0 a still head that only talks and
    blinks. The same seed draws the same random numbers whatever its value.
    """
    _check_duration(duration)
    _check_head_motion(head_motion)
    blinks = []
    t = rng.uniform(0.1, 0.8) * min(duration, 2.5)  # at least one blink in the first 2 s
    while t < duration:
        blinks.append([round(float(t), 4), round(float(rng.uniform(0.16, 0.3)), 4)])
        t += rng.uniform(1.2, 4.0)
    motion = {
        "yaw": _sines(rng, 3, (5.0, 14.0), (0.12, 0.6)),
        "pitch": _sines(rng, 2, (2.0, 7.0), (0.1, 0.5)),
        "nod": _sines(rng, 1, (0.0, 6.0), (0.8, 2.0)),
        "roll": _sines(rng, 2, (1.0, 4.0), (0.1, 0.5)),
        "tx": _sines(rng, 2, (0.005, 0.035), (0.05, 0.4)),
        "ty": _sines(rng, 2, (0.005, 0.025), (0.05, 0.4)),
        "zoom": _sines(rng, 1, (0.0, 0.04), (0.05, 0.3)),
        "talk": _sines(rng, 1, (1.0, 1.0), (0.1, 0.35)) | {"bias": round(float(rng.uniform(-0.2, 0.9)), 4)},
        "syllables": _sines(rng, 3, (0.25, 0.6), (1.5, 5.0)),
        "blinks": blinks,
        "gaze_x": _sines(rng, 2, (0.0, 0.05), (0.1, 0.8)),
        "gaze_y": _sines(rng, 1, (0.0, 0.03), (0.1, 0.8)),
        "brow": _sines(rng, 2, (0.0, 0.6), (0.1, 0.7)),
    }
    if head_motion != 1:
        for key in ("yaw", "pitch", "nod", "roll", "tx", "ty", "zoom"):
            motion[key]["amp"] = [round(a * float(head_motion), 5) for a in motion[key]["amp"]]
    return motion


def _eval_sines(spec: dict, t: np.ndarray) -> np.ndarray:
    amp, freq, phase = (np.asarray(spec[k], dtype=np.float64)[:, None] for k in ("amp", "freq", "phase"))
    return (amp * np.sin(2 * math.pi * freq * t[None] + phase)).sum(0)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    y = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return y * y * (3 - 2 * y)


def motion_at(motion: dict, t: np.ndarray) -> dict[str, np.ndarray]:
    """Evaluate a motion at times ``t`` (seconds, float (F,)): yaw, pitch, roll (degrees),
    tx, ty, zoom, mouth_open [0,1], eye_open [0,1], gaze_x, gaze_y, brow_raise [0,1],
    each float64 (F,)."""
    t = np.asarray(t, dtype=np.float64)
    talk = motion["talk"]
    envelope = 1 / (1 + np.exp(-6 * (_eval_sines(talk, t) + talk["bias"])))
    mouth = np.clip(envelope * (0.45 + _eval_sines(motion["syllables"], t)), 0.0, 1.0)
    eye = np.ones_like(t)
    for start, dur in motion["blinks"]:
        eye = np.minimum(eye, _smoothstep(0.15 * dur, 0.5 * dur, np.abs(t - start)))
    return {
        "yaw": _eval_sines(motion["yaw"], t),
        "pitch": _eval_sines(motion["pitch"], t) + _eval_sines(motion["nod"], t),
        "roll": _eval_sines(motion["roll"], t),
        "tx": _eval_sines(motion["tx"], t),
        "ty": _eval_sines(motion["ty"], t),
        "zoom": 1.0 + _eval_sines(motion["zoom"], t),
        "mouth_open": mouth,
        "eye_open": eye,
        "gaze_x": _eval_sines(motion["gaze_x"], t),
        "gaze_y": _eval_sines(motion["gaze_y"], t),
        "brow_raise": np.clip(_eval_sines(motion["brow"], t), 0.0, 1.0),
    }


# ----------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------
def _rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Local-to-camera rotations float64 (F, 3, 3) = Rz(roll) Ry(yaw) Rx(-pitch)."""
    y, p, r = (np.deg2rad(v) for v in (yaw, pitch, roll))
    one, zero = np.ones_like(y), np.zeros_like(y)
    ry = np.stack([np.stack([np.cos(y), zero, np.sin(y)], -1), np.stack([zero, one, zero], -1),
                   np.stack([-np.sin(y), zero, np.cos(y)], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, np.cos(p), np.sin(p)], -1),
                   np.stack([zero, -np.sin(p), np.cos(p)], -1)], -2)
    rz = np.stack([np.stack([np.cos(r), -np.sin(r), zero], -1), np.stack([np.sin(r), np.cos(r), zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


class _Pose:
    """Per-frame head geometry (float64 numpy): rotation R (F,3,3), head centre (F,3),
    head semi-axes (F,3) after zoom, and the neck pivot (F,2)."""

    def __init__(self, identity: dict, m: dict[str, np.ndarray]):
        self.R = _rotations(m["yaw"], m["pitch"], m["roll"])
        zoom = m["zoom"][:, None]
        self.axes = np.asarray(identity["head_axes"], dtype=np.float64)[None] * zoom
        cx, cy = identity["head_centre"]
        b0 = identity["head_axes"][1]
        self.pivot = np.stack([cx + m["tx"], cy - 0.8 * b0 + m["ty"]], -1)
        up = self.R @ np.array([0.0, 0.8 * b0, 0.0])
        self.centre = np.concatenate([self.pivot, np.zeros_like(zoom)], -1) + up * zoom

    def to_camera(self, local: np.ndarray) -> np.ndarray:
        """Head-local points in units of the semi-axes (unit sphere; (..., 3), shared or
        (F, ..., 3)) -> camera points (F, ..., 3)."""
        local = np.asarray(local, dtype=np.float64)
        scaled = local * self.axes.reshape((-1,) + (1,) * (local.ndim - 1) + (3,)) if local.ndim > 1 else \
            local[None] * self.axes
        flat = scaled.reshape(len(self.R), -1, 3)
        cam = np.einsum("fij,fnj->fni", self.R, flat) + self.centre[:, None]
        return cam.reshape(scaled.shape)


def _to_pixels(xy: np.ndarray, size: int) -> np.ndarray:
    """Image coordinates [-1, 1] (y up) -> pixel (column, row) with pixel centres at
    integers."""
    return np.stack([(xy[..., 0] + 1) * size / 2 - 0.5, (1 - xy[..., 1]) * size / 2 - 0.5], -1)


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
_T = torch.float32


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=_T)


class _Ellipsoid:
    """Closed-form ray cast of one ellipsoid per frame over a pixel grid.

    ``centre`` (F, 3), ``R`` (F, 3, 3) and ``axes`` (F, 3) are float64 numpy; ``X``
    (1, 1, W) and ``Y`` (1, H, 1) the pixel centres. Fields (float32 (F, H, W)):
    ``alpha`` anti-aliased coverage, ``z`` front depth; with ``local``: ``u, v, w`` the
    front point on the unit sphere of the ellipsoid's own frame.
    """

    def __init__(self, centre, R, axes, X, Y, pix: float, local: bool = False, depth: bool = True):
        minv = np.einsum("fij,fj,fkj->fik", R, axes ** 2, R)  # M^-1 = R diag(axes^2) R^T
        m = np.linalg.inv(minv)
        a_zz = m[:, 2, 2]
        mxy = m[:, 2, :2]
        schur = m[:, :2, :2] - mxy[:, :, None] * mxy[:, None, :] / a_zz[:, None, None]
        det = np.maximum(np.linalg.det(schur), 1e-12)
        r_mean = det ** -0.25  # geometric-mean radius of the silhouette ellipse
        col = lambda v: _t(v).view(-1, 1, 1)  # noqa: E731
        dx = X - col(centre[:, 0])
        dy = Y - col(centre[:, 1])
        g = (col(schur[:, 0, 0]) * dx * dx + col(schur[:, 1, 1]) * dy * dy) + (2 * col(schur[:, 0, 1])) * (dx * dy)
        h = g.clamp_(min=0.0).sqrt_()
        # signed distance ~ (h - 1) * r along the ray from the centre; ~1 px ramp
        self.alpha = ((1.0 - h) * col(r_mean / pix) + 0.5).clamp_(0.0, 1.0)
        if not (depth or local):
            return
        disc = (1.0 - h * h).clamp_(min=0.0).sqrt_()
        b = col(mxy[:, 0] / a_zz) * dx + col(mxy[:, 1] / a_zz) * dy
        dz = disc * col(1.0 / np.sqrt(a_zz)) - b
        self.z = dz + col(centre[:, 2])
        if local:
            rt = np.transpose(R, (0, 2, 1)) / axes[:, :, None]  # camera -> unit-sphere local
            self.u = col(rt[:, 0, 0]) * dx + col(rt[:, 0, 1]) * dy + col(rt[:, 0, 2]) * dz
            self.v = col(rt[:, 1, 0]) * dx + col(rt[:, 1, 1]) * dy + col(rt[:, 1, 2]) * dz
            self.w = col(rt[:, 2, 0]) * dx + col(rt[:, 2, 1]) * dy + col(rt[:, 2, 2]) * dz

    @staticmethod
    def bbox(centre, R, axes) -> np.ndarray:
        """Screen-space (xmin, xmax, ymin, ymax) of the silhouettes over all frames."""
        minv = np.einsum("fij,fj,fkj->fik", R, axes ** 2, R)
        hx, hy = np.sqrt(minv[:, 0, 0]), np.sqrt(minv[:, 1, 1])
        return np.array([(centre[:, 0] - hx).min(), (centre[:, 0] + hx).max(),
                         (centre[:, 1] - hy).min(), (centre[:, 1] + hy).max()])


def _lambert(u, v, w, light_local: np.ndarray, ambient: float) -> torch.Tensor:
    """Shade from the unit-sphere normal (u, v, w) and a per-frame light in local
    coordinates (F, 3): ambient + (1 - ambient) * max(n . l, 0), float32 (F, H, W)."""
    col = lambda k: _t(light_local[:, k] * (1 - ambient)).view(-1, 1, 1)  # noqa: E731
    d = u * col(0) + v * col(1) + w * col(2)
    return d.clamp_(min=0.0).add_(ambient)


def _ellipse_sdf(u, v, cu, cv, ru, rv) -> torch.Tensor:
    """Approximate signed distance (unit-sphere units, < 0 inside) to an axis-aligned
    ellipse: k0 (k0 - 1) / k1, bounded below by the distance to the bounding box (so
    thin ellipses leave no streak along their axis); cu/cv/ru/rv are floats or
    (F, 1, 1) tensors."""
    au = (u - cu).abs_()
    av = (v - cv).abs_()
    du = au / ru
    dv = av / rv
    k0 = (du * du + dv * dv).sqrt_()
    du.div_(ru)
    dv.div_(rv)
    k1 = (du * du + dv * dv).sqrt_().clamp_(min=1e-6)
    box = torch.maximum(au.sub_(ru), av.sub_(rv))
    return torch.maximum(k0.sub(1.0).mul_(k0).div_(k1), box)


def _cover(sdf: torch.Tensor, inv_px: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage (F, H, W) of ``sdf`` < 0 with ``inv_px`` = 1 / (pixel
    size in the sdf's units)."""
    return (0.5 - sdf * inv_px).clamp_(0.0, 1.0)


def _rgb(colour) -> torch.Tensor:
    """An RGB triple -> float32 (3, 1, 1, 1), broadcastable over (3, F, H, W)."""
    return _t(colour).view(3, 1, 1, 1)


def _over(img: torch.Tensor, colour, alpha: torch.Tensor) -> None:
    """In place: img = lerp(img, colour, alpha); img float32 (3, F, H, W) (channels
    first: fast broadcasting), colour an RGB triple or a tensor broadcastable to img,
    alpha (F, H, W)."""
    c = colour if isinstance(colour, torch.Tensor) else _rgb(colour)
    img.lerp_(c.expand_as(img), alpha)


def _background(identity: dict, X: torch.Tensor, Y: torch.Tensor, pix: float) -> torch.Tensor:
    """Static background float32 (3, 1, H, W): a two-colour gradient with soft discs."""
    ang = identity["background_angle"]
    t = ((X * math.cos(ang) + Y * math.sin(ang)) * 0.35 + 0.5).clamp(0, 1)  # (1, H, W)
    c0, c1 = (_rgb(c) for c in identity["background"])
    img = c0 + t * (c1 - c0)
    for blob in identity["blobs"]:
        d = ((X - blob["centre"][0]) ** 2 + (Y - blob["centre"][1]) ** 2).sqrt() - blob["radius"]
        _over(img, blob["colour"], (0.5 - d / max(blob["softness"], pix)).clamp(0, 1) * 0.85)
    return img


def _pixel_range(lo: float, hi: float, pix: float, size: int) -> tuple[int, int]:
    """Pixel index range [start, stop) covering image distances lo..hi from the image
    edge (plus a 2-pixel margin), clipped to the frame."""
    return int(np.clip(np.floor(lo / pix) - 2, 0, size)), int(np.clip(np.ceil(hi / pix) + 2, 0, size))


def _render(identity: dict, m: dict[str, np.ndarray], size: int) -> torch.Tensor:
    """Draw every frame of motion values ``m`` (from :func:`motion_at`): float32
    (3, F, size, size) RGB in [0, 1], channels first."""
    F = len(m["yaw"])
    pix = 2.0 / size
    coords = (torch.arange(size, dtype=_T) + 0.5) * pix - 1.0
    X, Y = coords.view(1, 1, size), coords.flip(0).view(1, size, 1)
    pose = _Pose(identity, m)
    A = pose.axes
    a0, b0, c0 = identity["head_axes"]
    skin = np.asarray(identity["skin"])
    hair = np.asarray(identity["hair"])
    light = np.asarray(identity["light"], dtype=np.float64)
    light /= np.linalg.norm(light)
    light_local = np.einsum("fji,j->fi", pose.R, light)  # R^T l
    ambient = identity["ambient"]

    # --- full frame: background, shoulders, neck ---------------------------------------
    img = _background(identity, X, Y, pix).expand(3, F, size, size).clone()
    nw = identity["neck_width"] * a0
    pcx = _t(pose.pivot[:, 0]).view(-1, 1, 1)
    ncut = _t(pose.centre[:, 1]).view(-1, 1, 1)
    nd = (X - pcx).abs_() / nw
    neck = ((1 - nd) * (nw / pix) + 0.5).clamp_(0, 1) * ((ncut - Y) / pix + 0.5).clamp_(0, 1)
    _over(img, _rgb(skin * 0.72) * (1.0 - 0.35 * nd.clamp(0, 1) ** 2), neck)

    trx, try_ = identity["torso"]
    tcx = _t(identity["head_centre"][0] + 0.5 * m["tx"]).view(-1, 1, 1)
    tcy = _t(identity["head_centre"][1] - 1.4 * b0 - try_ * b0 + 0.5 * m["ty"]).view(-1, 1, 1)
    hd = (((X - tcx) / (trx * a0)) ** 2 + ((Y - tcy) / (try_ * b0)) ** 2).sqrt()
    shoulders = ((1 - hd) * (try_ * b0 / pix) + 0.5).clamp_(0, 1)
    shirt_shade = 0.8 + 0.25 * ((Y - tcy) / (try_ * b0)).clamp(-1, 1)
    _over(img, _rgb(identity["shirt"]) * shirt_shade, shoulders)
    # --- head region: a crop covering every frame's head, hair and ears ------------------
    style = identity["hair_style"]
    hair_off = {"short": (0.0, 0.06, -0.05), "medium": (0.0, 0.05, -0.12), "long": (0.0, -0.3, -0.15)}.get(style)
    hair_scale = {"short": (1.05, 1.04, 1.05), "medium": (1.16, 1.1, 1.12), "long": (1.2, 1.42, 1.08)}.get(style)
    ear_h, ear_y = identity["ear"]
    ears_local = [np.array([s * 0.96, ear_y, -0.05]) for s in (-1.0, 1.0)]
    ear_axes = A * np.array([0.2, ear_h, 0.22])
    nose_w, nose_l, nose_d, nose_y = identity["nose"]
    nose_local = np.array([0.0, nose_y, math.sqrt(1 - nose_y ** 2) * 0.93])
    nose_axes = A * np.array([nose_w, nose_l, nose_d])
    parts = [(pose.centre, A), (pose.to_camera(nose_local), nose_axes)]
    parts += [(pose.to_camera(e), ear_axes) for e in ears_local]
    if hair_off is not None:
        hair_centre, hair_axes = pose.to_camera(np.array(hair_off)), A * np.array(hair_scale)
        parts.append((hair_centre, hair_axes))
    boxes = np.stack([_Ellipsoid.bbox(c, pose.R, ax) for c, ax in parts])
    c0_, c1_ = _pixel_range(boxes[:, 0].min() + 1, boxes[:, 1].max() + 1, pix, size)
    r0_, r1_ = _pixel_range(1 - boxes[:, 3].max(), 1 - boxes[:, 2].min(), pix, size)
    if c1_ <= c0_ or r1_ <= r0_:
        return img
    Xc, Yc = X[..., c0_:c1_], Y[:, r0_:r1_]
    crop = img[:, :, r0_:r1_, c0_:c1_]  # a view: drawing into it draws into img

    if hair_off is not None:
        hv = _Ellipsoid(hair_centre, pose.R, hair_axes, Xc, Yc, pix, depth=False)
        _over(crop, hair * 0.8, hv.alpha)
    ear_shapes = [_Ellipsoid(pose.to_camera(e), pose.R, ear_axes, Xc, Yc, pix) for e in ears_local]
    for ear in ear_shapes:
        ear.shade = (0.55 + 0.35 * ((ear.z - _t(pose.centre[:, 2]).view(-1, 1, 1)) / float(a0)).clamp(-1, 1))
        _over(crop, _rgb(skin * 0.9) * ear.shade, ear.alpha)

    head = _Ellipsoid(pose.centre, pose.R, A, Xc, Yc, pix, local=True)
    u, v, w = head.u, head.v, head.w
    # pixel size in unit-sphere units (foreshortened towards the limb)
    inv_px = (w.clamp(min=0.2) * float(min(a0, b0)) / pix)
    albedo = _rgb(skin).expand_as(crop).clone()
    col = lambda x: _t(x).view(-1, 1, 1)  # noqa: E731
    # hair cap: above the hairline, or the back of the head
    if style != "bald":
        h0, h1 = identity["hairline"]
        cap = torch.minimum(h0 + h1 * u * u - v, w + (0.25 if style == "short" else 0.35))
        if style == "short":
            cap = torch.maximum(cap, -0.35 - v)
        stripes = 0.88 + 0.12 * torch.sin(u * identity["hair_stripes"] + 3.0 * v)
        _over(albedo, _rgb(hair) * stripes, _cover(cap, inv_px))
    ex, ey, erx, ery = identity["eye"]
    openness = np.maximum(m["eye_open"], 0.0)
    brow_h, brow_t, brow_k = identity["brow"]
    gx, gy = m["gaze_x"], m["gaze_y"]
    for side in (-1.0, 1.0):
        cx = side * ex
        socket = _ellipse_sdf(u, v, cx, ey, erx * 1.3, ery * 1.6)
        _over(albedo, skin * 0.82, (0.5 - socket * inv_px * 0.35).clamp_(0, 1))
        ry_t = col(np.maximum(ery * openness, 1e-3))
        sclera_sdf = _ellipse_sdf(u, v, cx, ey, erx, ry_t)
        sclera = _cover(sclera_sdf, inv_px)
        lash = _cover(_ellipse_sdf(u, v, cx, ey + 0.008, erx * 1.06, ry_t + 0.018), inv_px) * \
            _cover(ey - 0.004 - v, inv_px)
        _over(albedo, (0.12, 0.08, 0.07), lash)
        _over(albedo, (0.94, 0.93, 0.9), sclera)
        iris_r = ery * identity["iris_radius"]
        iris = _cover(_ellipse_sdf(u, v, col(cx + gx), col(ey + gy), iris_r, iris_r), inv_px) * sclera
        _over(albedo, identity["iris"], iris)
        pupil = _cover(_ellipse_sdf(u, v, col(cx + gx), col(ey + gy), iris_r * 0.45, iris_r * 0.45), inv_px) * sclera
        _over(albedo, (0.03, 0.03, 0.03), pupil)
        # eyebrow: a curved band above the eye that rises with brow_raise
        by = col(ey + brow_h + 0.06 * m["brow_raise"])
        du = u - cx
        band = torch.maximum((v - by + brow_k * du * du).abs_() - brow_t,
                             du.abs() - erx * 1.25)
        _over(albedo, identity["brow_colour"], _cover(band, inv_px))
    my, mw, lip_t = identity["mouth"]
    mo = m["mouth_open"]
    lip_ry = col(lip_t + 0.1 * mo)
    _over(albedo, identity["lips"], _cover(_ellipse_sdf(u, v, 0.0, my, mw, lip_ry), inv_px))
    in_ry = col(np.maximum(0.085 * mo, 0.004))
    inner = _cover(_ellipse_sdf(u, v, 0.0, my, mw * 0.86, in_ry), inv_px)
    _over(albedo, (0.22, 0.05, 0.07), inner)
    teeth = inner * _cover(col(my) + in_ry * 0.35 - v, inv_px)
    _over(albedo, (0.92, 0.9, 0.84), teeth)
    shade = _lambert(u, v, w, light_local, ambient)
    _over(crop, albedo.mul_(shade), head.alpha)

    # ears in front of the head surface (turned towards the camera)
    behind = 1.0 - head.alpha
    eps = 0.15 * pix
    for ear in ear_shapes:
        front = ((ear.z - head.z) / eps + 0.5).clamp_(0, 1)
        _over(crop, _rgb(skin * 0.9) * ear.shade, ear.alpha * front * head.alpha)
    nose = _Ellipsoid(pose.to_camera(nose_local), pose.R, nose_axes, Xc, Yc, pix, local=True)
    front = ((nose.z - head.z) / eps + 0.5).clamp_(0, 1)
    nose_alpha = nose.alpha * (behind + head.alpha * front)
    nose_shade = _lambert(nose.u, nose.v, nose.w, light_local, ambient)
    _over(crop, _rgb(skin) * nose_shade, nose_alpha)
    return img


class _SingleThread:
    """Context: torch intra-op threads = 1 (the per-frame tensors are small; thread
    hand-offs cost more than they save, badly so on a busy machine)."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


def render_video(identity: dict, motion: dict, frames: int, size: int, fps: float = 25.0) -> np.ndarray:
    """Render ``frames`` frames of ``identity`` moving with ``motion`` at ``fps``:
    uint8 (F, size, size, 3) RGB. Frames are drawn a chunk at a time
    (:data:`RENDER_CHUNK_PIXELS`), so the memory beyond the result does not grow with
    ``frames``. Runs with one torch thread (restored afterwards): the tensors are small
    and thread hand-offs cost more than they save; use ``write_dataset(workers=N)`` for
    parallelism."""
    _check_int("frames", frames, 1)
    _check_int("size", size, 16)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    t = np.arange(frames) / fps
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    step = _chunk_frames(size)
    with torch.no_grad(), _SingleThread():
        for start in range(0, frames, step):
            stop = min(start + step, frames)
            img = _render(identity, motion_at(motion, t[start:stop]), size)
            out[start:stop] = img.mul_(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    return out


#: Pixels (frames x size x size) drawn at once by :func:`render_video`: the float32 work
#: tensors take about 30 bytes per pixel, so a chunk needs some 30 MB whatever the length.
RENDER_CHUNK_PIXELS = 2**20


def _chunk_frames(size: int) -> int:
    """Frames per :func:`_render` call at ``size`` (at least 1): 64 at 128x128."""
    return max(1, RENDER_CHUNK_PIXELS // (size * size))


def frame_parameters(identity: dict, motion: dict, frames: int, size: int, fps: float = 25.0) -> list[dict]:
    """Per-frame ground truth (list of F dicts): time, yaw/pitch/roll (degrees), tx/ty
    (image half-widths), zoom, eye_open, mouth_open, gaze, brow_raise, and landmark
    pixel positions (column, row) at ``size``: eye_left/eye_right (image left/right at
    yaw 0), nose_tip, mouth, chin, head_centre; ``*_visible`` flags (facing the
    camera)."""
    _check_int("frames", frames, 1)
    t = np.arange(frames) / fps
    m = motion_at(motion, t)
    pose = _Pose(identity, m)
    ex, ey = identity["eye"][:2]
    nose_w, nose_l, nose_d, nose_y = identity["nose"]
    my = identity["mouth"][0]
    sph = lambda x, y: np.array([x, y, math.sqrt(max(1 - x * x - y * y, 0.0))])  # noqa: E731
    tip = np.array([0.0, nose_y, math.sqrt(1 - nose_y ** 2) * 0.93 + nose_d])
    local = np.stack([sph(-ex, ey), sph(ex, ey), tip, sph(0.0, my), np.array([0.0, -1.0, 0.0]), np.zeros(3)])
    cam = pose.to_camera(local)  # (F, 6, 3)
    px = _to_pixels(cam[..., :2], size)
    facing = np.einsum("fij,nj->fni", pose.R, local / np.maximum(np.linalg.norm(local, axis=-1, keepdims=True), 1e-9))
    out = []
    for f in range(frames):
        rec = {"frame": f, "time": round(float(t[f]), 5)}
        for key in ("yaw", "pitch", "roll", "tx", "ty", "zoom", "eye_open", "mouth_open", "gaze_x", "gaze_y",
                    "brow_raise"):
            rec[key] = round(float(m[key][f]), 5)
        rec["landmarks"] = {name: [round(float(px[f, k, 0]), 3), round(float(px[f, k, 1]), 3)]
                            for k, name in enumerate(LANDMARKS)}
        rec["landmarks_visible"] = {name: bool(facing[f, k, 2] > 0.05) for k, name in enumerate(LANDMARKS[:4])}
        out.append(rec)
    return out


# ----------------------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------------------
def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _plan(videos: int, test_fraction: float, videos_per_identity: int) -> list[tuple[str, int, int]]:
    """(split, identity, clip) for every video; test identities never appear in train."""
    n_test = int(round(videos * test_fraction))
    if test_fraction > 0 and videos >= 2:
        n_test = min(max(n_test, 1), videos - 1)
    n_train = videos - n_test
    plan = [("train", i // videos_per_identity, i % videos_per_identity) for i in range(n_train)]
    first_test = -(-n_train // videos_per_identity)
    plan += [("test", first_test + i // videos_per_identity, i % videos_per_identity) for i in range(n_test)]
    return plan


def _write_frames_folder(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image

    from .data.video_io import atomic_path

    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"{i:05d}.png", compress_level=1)


def _write_json(path: Path, obj) -> None:
    from .data.video_io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, separators=(",", ":"))


def _make_video(job: tuple) -> dict:
    """Render and write one planned video; returns its listing entry (runs in workers)."""
    from .data.video_io import write_video

    out, split, ident, clip, seed, frames, size, fps, fmt, head_motion = job
    out = Path(out)
    identity = sample_identity(np.random.default_rng([seed, 0, ident]))
    motion = sample_motion(np.random.default_rng([seed, 1, ident, clip]), frames / fps, head_motion)
    clip_frames = render_video(identity, motion, frames, size, fps)
    name = f"id{ident:05d}#{clip:03d}"
    if fmt == "mp4":
        video_name = f"{name}.mp4"
        write_video(out / split / video_name, clip_frames, fps=fps)
    else:
        video_name = name
        _write_frames_folder(out / split / name, clip_frames)
    _write_json(out / "meta" / split / f"{name}.json", {
        "video": f"{split}/{video_name}", "identity_id": ident, "clip": clip, "fps": fps, "size": size,
        "identity": identity, "motion": motion,
        "frames": frame_parameters(identity, motion, frames, size, fps),
    })
    return {"video": f"{split}/{video_name}", "split": split, "identity_id": ident, "clip": clip}


def _init_worker() -> None:
    torch.set_num_threads(1)


def write_dataset(out: str | os.PathLike, videos: int = 200, frames: int = 64, size: int = 128, seed: int = 0,
                  format: str = "mp4", test_fraction: float = 0.1, videos_per_identity: int = 2,
                  fps: float = 25.0, workers: int = 1, overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None, head_motion: float = 1.0) -> dict:
    """Render a synthetic dataset in the FOMM layout and return its summary dict.

    Writes ``out/train/`` and ``out/test/`` with videos ``id{identity:05d}#{clip:03d}``
    (``.mp4`` files, or frame folders of ``00000.png``... with ``format="png"``),
    ``out/meta/{split}/{name}.json`` (identity and motion parameters and the per-frame
    ground truth of :func:`frame_parameters`) and ``out/synth.json`` (settings and the
    video list; the returned dict adds ``seconds``). Each identity has
    ``videos_per_identity`` clips; the test identities differ from the training ones.
    The output depends only on the arguments (not on ``workers``, the number of
    processes, 0 = one per core). ``fps`` must lie in :data:`FPS_RANGE`. The dataset is
    built in a hidden folder and moved into ``out`` only once complete: a failed run leaves
    ``out`` as it was (with ``overwrite``, an older dataset is replaced only then; only one
    that ``write_dataset`` wrote, with its ``synth.json``: other train/ or test/ folders are
    refused even with ``overwrite``).
    ``progress(done, total)`` is called after each video. ``head_motion`` scales the
    head-pose amplitudes (see :func:`sample_motion`).
    """
    _check_int("videos", videos, 1)
    _check_int("frames", frames, 1)
    _check_int("size", size, 16)
    _check_int("seed", seed, 0)
    _check_int("videos_per_identity", videos_per_identity, 1)
    _check_int("workers", workers, 0)
    if workers == 0:  # auto: one process per core, none for small jobs (start-up costs ~2 s)
        workers = max(1, min(os.cpu_count() or 1, 8, videos // 16))
    if format not in ("mp4", "png"):
        raise ValueError(f"format must be 'mp4' or 'png', got {format!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    _check_fps(fps)
    if frames / fps > MAX_DURATION:
        raise ValueError(f"frames / fps must be <= {MAX_DURATION:g} seconds per video, got {frames} / {fps}")
    _check_head_motion(head_motion)
    if format == "mp4" and size % 2:
        raise ValueError(f"size must be even for format='mp4' (yuv420p), got {size!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out {str(out)!r} exists and is not a folder")
    existing = [out / name for name in _OWNED if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"out {str(out)!r} already holds a dataset ({existing[0].name}); "
                              f"pass overwrite=True (--overwrite) to replace it")
    if existing and not _is_synth_dataset(out):
        raise FileExistsError(f"out {str(out)!r} holds {', '.join(p.name for p in existing)} but no synth.json of "
                              "mcc-fast synth: not a synthetic dataset, so it is not replaced even with overwrite "
                              "(choose another folder)")
    plan = _plan(videos, float(test_fraction), videos_per_identity)
    created = _missing_folders(Path(os.path.abspath(out)))
    stage = _staging_folder(out)
    try:
        for split in ("train", "test"):
            (stage / split).mkdir()
        jobs = [(str(stage), split, ident, clip, seed, frames, size, float(fps), format, float(head_motion))
                for split, ident, clip in plan]
        start = time.perf_counter()
        listing = _render_all(jobs, workers, progress)
        summary = {
            "generator": "mcc_fast.training.synth", "version": _VERSION, "seed": seed, "videos": videos,
            "frames": frames, "size": size, "fps": fps, "format": format, "test_fraction": test_fraction,
            "videos_per_identity": videos_per_identity, "head_motion": float(head_motion),
            "num_train": sum(1 for e in listing if e["split"] == "train"),
            "num_test": sum(1 for e in listing if e["split"] == "test"),
            "list": listing,
        }
        _write_json(stage / "synth.json", summary)
        _install(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # deepest first; only the empty folders this run made
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    return summary | {"seconds": round(time.perf_counter() - start, 3)}


_OWNED = ("train", "test", "meta", "synth.json")  # what a dataset is made of inside `out`


def _is_synth_dataset(out: Path) -> bool:
    """True when ``out/synth.json`` is the summary :func:`write_dataset` writes (only such a
    dataset is replaced by ``overwrite``: a folder of the user's own videos never is)."""
    try:
        summary = json.loads((out / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("generator") == "mcc_fast.training.synth"


def _render_all(jobs: list[tuple], workers: int, progress: Callable[[int, int], None] | None) -> list[dict]:
    """Run :func:`_make_video` on every job (in ``workers`` processes); the listing in job order."""
    listing = []
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            listing.append(_make_video(job))
            if progress is not None:
                progress(len(listing), len(jobs))
        return listing
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded torch process
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker) as pool:
        for entry in pool.map(_make_video, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
            listing.append(entry)
            if progress is not None:
                progress(len(listing), len(jobs))
    return listing


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _staging_folder(out: Path) -> Path:
    """A new hidden folder to build the dataset in, on the same file system as ``out``
    (inside it when it exists, else next to it), so a failed run leaves nothing half-made."""
    import tempfile

    if out.is_dir():
        return Path(tempfile.mkdtemp(prefix=".synth-", dir=out))
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))


def _folder_mode() -> int:
    """The permission bits ``mkdir`` gives a new folder: 0o777 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _install(stage: Path, out: Path) -> None:
    """Move the finished dataset from ``stage`` into ``out``: a rename when ``out`` is new,
    else the entries of :data:`_OWNED` replace those in ``out`` (other files stay; the old
    entries are put back if a move fails)."""
    if not out.exists():
        os.chmod(stage, _folder_mode())  # mkdtemp made it private (0700): a new dataset gets mkdir's mode
        os.replace(stage, out)
        return
    replaced = stage / ".replaced"
    replaced.mkdir()
    try:
        for name in _OWNED:
            if (out / name).exists():
                os.replace(out / name, replaced / name)
        for name in _OWNED:
            if (stage / name).exists():
                os.replace(stage / name, out / name)
    except BaseException:
        for name in _OWNED:
            if (replaced / name).exists():
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
                elif (out / name).exists():
                    (out / name).unlink()
                os.replace(replaced / name, out / name)
        raise
    shutil.rmtree(stage)


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``mcc-fast synth ...``); see :mod:`mcc_fast.training.synth_cli`."""
    from .synth_cli import main as cli_main

    return cli_main(argv)
