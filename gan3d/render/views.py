"""The views a generator was trained on, and the camera paths that show it.

A run that draws its fakes' cameras from the dataset (`dataset.camera.dist: dataset`) trained on the dataset's
poses: a subsample of them is stored with every checkpoint (`TrainedViews.KEY`), because the config's prior
(`yaw_mean` +- `yaw_std`) then says nothing about what the generator saw. Any other run trained on its prior,
which is sampled here. Both answer the same questions: how far a camera is from every trained view (what
`gan3d invert` warns about), where the views are centred, and whether they go all around the object (then a
full orbit shows it, and "front" means nothing).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from gan3d.config import CameraConfig
from gan3d.draws import seeded
from gan3d.errors import ConfigError

STORED = 2048  # poses kept with a checkpoint: enough for nearest-view distances, ~16 KB
ALL_AROUND_GAP_DEG = 90.0  # yaw coverage with no gap wider than this is "all around"


def directions(angles: torch.Tensor) -> torch.Tensor:
    """[N, >=2] yaw, pitch -> [N, 3] unit vectors from the object's centre to the camera (cameras.camera_origins)."""
    yaw, pitch = angles[:, 0].double(), angles[:, 1].double()
    return torch.stack([pitch.sin() * yaw.cos(), pitch.cos(), pitch.sin() * yaw.sin()], -1)


def subsample(angles: torch.Tensor, n: int = STORED) -> torch.Tensor:
    """At most `n` of [N, >=2] poses as [n, 2] yaw, pitch, evenly strided (deterministic)."""
    idx = torch.linspace(0, len(angles) - 1, min(n, len(angles))).round().long()
    return angles[idx, :2].float().contiguous()


@dataclass
class TrainedViews:
    angles: torch.Tensor  # [N, 2] yaw, pitch
    source: str  # "dataset" (stored with the run) or "prior" (sampled from the camera config)
    camera: CameraConfig

    KEY = "data/trained_views"  # where a checkpoint's state holds the stored poses

    @classmethod
    def of(cls, G) -> "TrainedViews":
        """A generator's: the poses its checkpoint stored, else its camera prior's."""
        stored = getattr(G, "trained_views", None)
        if stored is not None and len(stored):
            return cls(stored.float(), "dataset", G.camera)
        return cls.prior(G.camera)

    @classmethod
    def prior(cls, camera: CameraConfig, n: int = STORED) -> "TrainedViews":
        from gan3d.render.cameras import sample_camera_angles

        if camera.dist == "dataset":  # no stored poses and no prior: the config's mean and spread stand in
            camera = dataclasses.replace(camera, dist="normal")
        return cls(sample_camera_angles(n, camera, seeded(0))[:, :2], "prior", camera)

    def nearest_deg(self, angles: torch.Tensor) -> float:
        """Degrees between a camera [>=2] and the trained view closest to it (seen from the object's centre)."""
        cos = directions(self.angles) @ directions(torch.as_tensor(angles).reshape(1, -1))[0]
        return math.degrees(math.acos(float(cos.max().clamp(-1, 1))))

    def spacing_deg(self) -> float:
        """The median distance (degrees) from a trained view to its nearest neighbour: how densely they cover."""
        d = directions(self.angles[:1024])
        cos = (d @ d.T).fill_diagonal_(-1)
        return math.degrees(float(torch.acos(cos.max(1).values.clamp(-1, 1)).median()))

    def yaw_gap_deg(self) -> float:
        """The widest yaw interval (degrees, around the circle) with no trained view."""
        yaw = torch.sort(torch.remainder(self.angles[:, 0].double(), 2 * math.pi)).values
        gaps = torch.cat([yaw[1:] - yaw[:-1], (yaw[:1] + 2 * math.pi) - yaw[-1:]])
        return math.degrees(float(gaps.max()))

    def stored(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of these views: the dataset's poses (a prior is in the config already)."""
        return {self.KEY: self.angles.cpu()} if self.source == "dataset" else {}

    @property
    def all_around(self) -> bool:
        return self.yaw_gap_deg() < ALL_AROUND_GAP_DEG

    def centre(self) -> tuple[float, float]:
        """(yaw, pitch) the views centre on: the prior's mean as configured, or the stored poses' circular mean
        yaw and median pitch."""
        if self.source == "prior":
            return self.camera.yaw_mean, self.camera.pitch_mean
        yaw = math.atan2(float(self.angles[:, 0].sin().mean()), float(self.angles[:, 0].cos().mean()))
        return yaw, float(self.angles[:, 1].median())

    def summary(self) -> str:
        """One line: where the views are, e.g. for `validate` and the camera report."""
        p = torch.rad2deg(self.angles[:, 1])
        pitch = f"pitch {float(p.min()):.0f}-{float(p.max()):.0f} deg"
        if self.all_around:
            return f"all around the object (no yaw gap over {ALL_AROUND_GAP_DEG:.0f} deg), {pitch}"
        yaw, _ = self.centre()
        return (f"around yaw {math.degrees(yaw):.0f} deg (widest yaw gap {self.yaw_gap_deg():.0f} deg), {pitch}")

    # ------------------------------------------------------------------------------------------- camera paths
    def path(self, name: str, frames: int) -> torch.Tensor:
        """[T, 3] cameras of a named path around where the views centre: 'auto' is a full 'orbit' for views all
        around the object and the 'front_circle' ellipse otherwise."""
        if name == "auto":
            name = "orbit" if self.all_around else "front_circle"
        y, p = self.centre()
        t = torch.linspace(0, 1, frames)
        if name == "front_circle":  # an ellipse around the centre view
            return ellipse(frames, y, p, 0.35, 0.12)
        if name == "orbit":  # once around the object at the views' pitch
            return orbit(frames, y, p)
        if name == "line":  # a yaw sweep from left to right
            return torch.stack([y + (t * 2 - 1) * 0.6, torch.full_like(t, p), torch.zeros_like(t)], -1)
        if name == "wiggle":  # small left-right oscillation
            return torch.stack([y + 0.25 * torch.sin(t * 4 * math.pi), torch.full_like(t, p), torch.zeros_like(t)], -1)
        if name == "points":  # a few fixed views
            yaws = torch.tensor([-0.5, -0.25, 0.0, 0.25, 0.5])[:max(frames, 1)] + y
            return torch.stack([yaws, torch.full_like(yaws, p), torch.zeros_like(yaws)], -1)
        raise ConfigError(f"--camera {name!r}: expected one of {', '.join(PATHS)}")

    def grid(self, n: int) -> torch.Tensor:
        """[n, 3] cameras for a sample grid (each latent from a different view): evenly around the object for
        views all around it, else an ellipse spanning the prior's spread around the centre."""
        y, p = self.centre()
        if self.all_around:
            return orbit(n, y, p)
        return ellipse(n, y, p, max(self.camera.yaw_std, 0.3), max(self.camera.pitch_std, 0.1) / 2)


PATHS = ("auto", "front_circle", "orbit", "points", "line", "wiggle")


def ellipse(frames: int, yaw: float, pitch: float, yaw_range: float, pitch_range: float) -> torch.Tensor:
    """[T, 3] cameras on an ellipse around (yaw, pitch), roll 0."""
    t = torch.linspace(0, 2 * math.pi, frames + 1)[:-1]
    return torch.stack([yaw + yaw_range * torch.sin(t), pitch + pitch_range * torch.cos(t), torch.zeros_like(t)], -1)


def orbit(frames: int, yaw: float, pitch: float) -> torch.Tensor:
    """[T, 3] cameras once around the object at one pitch, starting at `yaw`, roll 0."""
    t = torch.linspace(0, 2 * math.pi, frames + 1)[:-1]
    return torch.stack([yaw + t, torch.full_like(t, pitch), torch.zeros_like(t)], -1)
