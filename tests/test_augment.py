"""ADA as the reference runs it (StyleGAN2-ADA's pipeline with the reference's probabilities), against closed forms.

docs/FIDELITY.md records the one-off check against the reference's own AugmentPipe with the same torch seed:
equal to 0 at p = 0 and p = 0.3, 4e-6 at p = 1, gradients equal.
"""
import math

import numpy as np
import pytest
import torch

from gan3d import config as config_mod
from gan3d.draws import RandomDraws
from gan3d.training.augment import AdaStatistic, AugmentPipe, AugmentProbs, augment, color_matrix
from gan3d.training.phases import Batch, GanParts, PosePool, Progress, make_optimizers, make_phases, training_step
from gan3d.nn import build_discriminator, build_generator

ONLY = {k: 0.0 for k in AugmentProbs.__dataclass_fields__}


class Fixed(RandomDraws):
    """Draws with chosen values for some names (the gates open at 0), random for the rest; notes every name."""

    def __init__(self, values):
        super().__init__(np.random.default_rng(0))
        self.values, self.names = values, []

    def uniform(self, name, shape, device=None):
        self.names.append(name)
        if name in self.values:
            return torch.as_tensor(self.values[name], dtype=torch.float32).expand(*shape).clone()
        return torch.zeros(shape) if name.endswith("_gate") else super().uniform(name, shape, device)

    def normal(self, name, shape, device=None):
        self.names.append(name)
        return super().normal(name, shape, device)


def test_integer_translation_moves_whole_pixels_and_reflects_at_the_border():
    """xint alone at p = 1: t = (0.1, -0.07) of 32 px is (3.2, -2.24), rounded to (3, -2) whole pixels; the sym6
    up/down round trip is the identity for such a shift, so the output is the input moved, reflected at the edge."""
    x = torch.rand(2, 3, 32, 32)
    draws = Fixed({"aug/xint": [(0.1 / 0.125 + 1) / 2, (-0.07 / 0.125 + 1) / 2]})  # t = (2u - 1) x 0.125
    y = augment(x, torch.tensor(1.0), AugmentProbs(**{**ONLY, "xint": 1.0}), draws)
    ref = torch.nn.functional.pad(x, [3, 0, 0, 2], mode="reflect")[:, :, 2:, :32]  # out[r, c] = in[r + 2, c - 3]
    assert (y - ref).abs().max() < 1e-4


def test_xflip_is_off_and_every_other_transform_on_as_in_the_reference_config():
    draws = Fixed({})
    augment(torch.rand(2, 3, 16, 16), torch.tensor(1.0), AugmentProbs(), draws)
    drawn = {n.split("/")[1].removesuffix("_gate") for n in draws.names}
    assert "xflip" not in drawn
    assert drawn == {"rotate90", "xint", "scale", "rotate_pre", "aniso", "rotate_post", "xfrac", "brightness",
                     "contrast", "lumaflip", "hue", "saturation"}


def test_at_p_zero_the_pipeline_still_resamples_as_the_reference_does():
    """The reference runs the geometric branch whenever a transform is enabled, even at p = 0 (STEP.md: max change
    1.7e-6 on its patches): not skipped, not exactly the identity."""
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    change = (augment(x, torch.tensor(0.0)) - x).abs().max().item()
    assert 0 < change < 1e-5
    assert torch.allclose(color_matrix(4, torch.tensor(0.0)), torch.eye(4).expand(4, 4, 4))
    y = augment(x, torch.tensor(1.0))
    assert y.shape == x.shape and (y - x).abs().max() > 0.1


def test_gradients_flow_through_the_pipeline_to_second_order():
    x = (torch.rand(2, 3, 16, 16, dtype=torch.float32) * 2 - 1).requires_grad_()
    torch.manual_seed(3)
    y = augment(x, torch.tensor(0.7))
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)  # as R1 through augmentation
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    assert g.abs().sum() > 0 and gg.abs().sum() > 0


def test_p_moves_by_the_images_of_an_interval_and_is_not_capped_at_one():
    pipe = AugmentPipe("ada", 0.95, target=0.6, speed_kimg=1.0)
    pipe.update(0.9, 64 * 4)  # D too sure of reals: more augmentation, by batch x interval / (speed x 1000)
    assert math.isclose(float(pipe.p), 0.95 + 0.256, rel_tol=1e-6)  # above 1, as the reference allows
    for _ in range(10):
        pipe.update(0.1, 256)
    assert float(pipe.p) == 0.0  # bounded below by 0


def test_the_ada_statistic_counts_dreg_reals_as_the_reference_does(smoke_cfg):
    cfg = config_mod.replace(smoke_cfg, ["training.augment.kind=none", "training.gamma=0.1", "training.r1_interval=4"])
    torch.manual_seed(0)
    G, D = build_generator(cfg).train().requires_grad_(False), build_discriminator(cfg).train().requires_grad_(False)
    parts = GanParts(cfg, G, D, AugmentPipe("none", 0, 0.6, 1), RandomDraws(np.random.default_rng(0)),
                     PosePool(torch.tensor([[1.57, 1.3, 0.0]] * 4), torch.zeros(4, 0)))
    reals = [Batch(torch.rand(8, 3, 32, 32) * 2 - 1, torch.tensor([[1.57, 1.3, 0.0]] * 8), torch.zeros(8, 0))]
    ada = AdaStatistic()
    opts = make_optimizers(cfg, G, D)
    for step in (4, 5):  # a step with Dreg, one without
        stats = training_step(parts, make_phases(cfg.training), opts, reals, Progress(step * 8, step))
        ada.observe(stats)
    assert ada.count == 3  # Dmain twice, Dreg once
    r = ada.take()
    assert -1 <= float(r) <= 1 and ada.take() is None  # taking starts over


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_the_colour_matrix_is_affine_and_keeps_grey_grey_without_hue_or_saturation(p):
    probs = AugmentProbs(**{**ONLY, "brightness": 1.0, "contrast": 1.0})
    C = color_matrix(64, torch.tensor(p), probs, RandomDraws(np.random.default_rng(0)))
    grey = torch.tensor([0.3, 0.3, 0.3, 1.0])
    out = C @ grey
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    assert torch.equal(C[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(64, 4))
