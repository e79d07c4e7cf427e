"""The FID detector: the Inception-v3 of the TensorFlow FID graph (inception-2015-12-05), fed as the reference's
metrics feed it (StyleGAN2-ADA's metric code with NVIDIA's TorchScript detector).

Two files work:
- pytorch-fid's weights `pt_inception-2015-12-05-6726825d.pth`, run by gan3d's plain-PyTorch body (torchvision does
  not import beside our torch) with the file's own key names (strict load). The FID variant differs from
  torchvision's Inception-v3: average pools exclude padding, the last block max-pools its pool branch.
- NVIDIA's TorchScript `inception-2015-12-05.pt`, loaded with torch.jit.load only behind a sha256 pin
  (`metrics.detector_sha256`), as no Python is unpickled from it. The pickled `.pkl` form is refused.

Either way the images are prepared as the reference's detector prepares them: uint8 -> float, resized to 299 x 299
the way TensorFlow 1 resizes (sample i at i x in / out, no half-pixel offset), then (x - 128) / 128.
Files are read from $GAN3D_INCEPTION_WEIGHTS, `metrics.inception_weights` or gan3d's cache directory; never
downloaded silently and never replaced by another network.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from gan3d.errors import ConfigError
from gan3d.storage import cache_root, file_sha256

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
TORCHSCRIPT_NAME = "inception-2015-12-05.pt"
TORCHSCRIPT_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{TORCHSCRIPT_NAME}"
PREPARATION = "tf1-bilinear-299, (x-128)/128 from uint8"  # part of the protocol and the real-statistics cache key


class InceptionWeightsMissing(FileNotFoundError):
    pass


def weights_path(explicit: str = "") -> Optional[Path]:
    for cand in (explicit, os.environ.get("GAN3D_INCEPTION_WEIGHTS", ""), str(cache_root() / WEIGHTS_NAME),
                 str(cache_root() / TORCHSCRIPT_NAME)):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def missing_message() -> str:
    return (f"gan3d: FID/KID need the FID Inception weights ({WEIGHTS_NAME} or NVIDIA's {TORCHSCRIPT_NAME}); "
            f"none in $GAN3D_INCEPTION_WEIGHTS or {cache_root()}. On a machine with internet run "
            f"`gan3d download-inception` (fetches {WEIGHTS_URL}); reporting SWD only.")


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] float -> [N, C, size, size] as TensorFlow 1's resize_bilinear (align_corners=False, no
    half-pixel centres): output i samples the input at i x (in / out), interpolating between floor and the next
    pixel (the last pixel repeats past the edge); along the width first, then the height."""
    for dim in (3, 2):
        n = x.shape[dim]
        pos = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n / size, dtype=torch.float32)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=n - 1)
        w = (pos - lo.float()).to(x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        x = torch.lerp(x.index_select(dim, lo), x.index_select(dim, hi), w.reshape(shape))
    return x


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, 3, H, W] -> the detector's input: float, TF1-resized to 299, (x - 128) / 128."""
    if images.dtype != torch.uint8:
        raise ValueError(f"the FID detector takes uint8 images, got {images.dtype}")
    return (tf1_resize_bilinear(images.float(), 299) - 128) / 128


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x):  # FID graph: average pooling without the padded zeros
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd), self.branch_pool(pool)], 1)


class FIDInception(nn.Module):
    """uint8 images [N, 3, H, W] -> 2048-d pool3 features [N, 2048] (prepared as the reference's detector)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, max_pool=False), InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # present in the weights file; unused for features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(prepare(images))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The network body on prepared input [N, 3, 299, 299] in [-1, 1]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [N, 2048]


class TorchScriptDetector(nn.Module):
    """NVIDIA's TorchScript detector, fed gan3d's prepared input (its own resize is the same rule)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images, return_features=True)  # it takes uint8 and prepares them itself


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding compiled code (`<name>/code/...`); torch.save's zip holds none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n for n in z.namelist())


def load_inception(explicit: str = "", device="cpu", pin: str = "") -> tuple[nn.Module, str]:
    """The detector and its file's sha256; InceptionWeightsMissing when there is none. A TorchScript file loads
    only when its sha256 equals `pin` (metrics.detector_sha256); a pickled detector is refused."""
    path = weights_path(explicit)
    if path is None:
        raise InceptionWeightsMissing(missing_message())
    if path.suffix == ".pkl":
        raise ConfigError(f"{path}: a pickled detector is not opened (unpickling runs the code it carries); use "
                          f"NVIDIA's TorchScript {TORCHSCRIPT_NAME} ({TORCHSCRIPT_URL}) or {WEIGHTS_NAME}")
    sha = file_sha256(path)
    if _is_torchscript(path):
        if sha != pin.lower():
            got = f"this file's sha256 is {sha}" + (f", the pin is {pin}" if pin else "")
            raise ConfigError(f"{path}: a TorchScript detector runs only behind a pin: set metrics.detector_sha256 "
                              f"to the sha256 its publisher gives ({got})")
        return TorchScriptDetector(torch.jit.load(str(path), map_location=device)).eval(), sha
    net = FIDInception()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device), sha


def download_weights(dest: Optional[str] = None) -> Path:
    """Fetch the standard weights (for machines with internet access)."""
    import urllib.request

    out = Path(dest) if dest else cache_root() / WEIGHTS_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    urllib.request.urlretrieve(WEIGHTS_URL, tmp)
    tmp.replace(out)
    return out
