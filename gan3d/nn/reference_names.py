"""One table from the reference EpiGRAF implementation's parameter names to gan3d's.

Used by the parity tests (tests/test_parity.py, against shared/seed_parity) and by checkpoint import.
Equalised learning rate: both store raw tensors the same way (StyleGAN2-ADA's convention: run-time weight =
stored * lr_mult / sqrt(fan_in), run-time bias = stored * lr_mult), so values are copied unchanged; only
names differ. Fixed FIR filters (`resample_filter`) are not state in gan3d: they are checked, not loaded.
Tensors the reference owns but never uses (`fromrgb` of every D block but the first, the mapping network's
`mean_camera_pose` without camera conditioning) are listed as dropped.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

import torch

from gan3d.errors import CheckpointError
from gan3d.nn.resample import fir_filter

Rule = tuple[str, Callable[[re.Match], Optional[str]]]


def _log2(r: str) -> int:
    return int(r).bit_length() - 1


def _generator_rules(num_mlp_layers: int) -> list[Rule]:
    tp = r"synthesis\.tri_plane_decoder\.b(\d+)\."
    return [
        (r"mapping\.fc(\d+)\.(weight|bias)", lambda m: f"mapping.layers.{m[1]}.{m[2]}"),
        (r"mapping\.embed\.(weight|bias)", lambda m: f"mapping.embed.{m[1]}"),
        (r"mapping\.w_avg", lambda m: "mapping.w_avg"),
        (tp + r"const", lambda m: f"synthesis.blocks.{_log2(m[1]) - 2}.const"),
        (tp + r"(conv[01])\.(noise_strength|noise_const)",
         lambda m: f"synthesis.blocks.{_log2(m[1]) - 2}.{m[2]}.{m[3]}"),
        (tp + r"(conv[01])\.(weight|bias|affine\.weight|affine\.bias)",
         lambda m: f"synthesis.blocks.{_log2(m[1]) - 2}.{m[2]}.conv.{m[3]}"),
        (tp + r"torgb\.(weight|bias|affine\.weight|affine\.bias)",
         lambda m: f"synthesis.blocks.{_log2(m[1]) - 2}.torgb.{m[2]}"),
        (r"synthesis\.tri_plane_mlp\.model\.(\d+)\.(weight|bias)",
         lambda m: (f"decoder.out.{m[2]}" if int(m[1]) == num_mlp_layers - 1 else f"decoder.hidden.{m[1]}.{m[2]}")),
    ]


def _discriminator_rules(top_resolution: int) -> list[Rule]:
    top = _log2(str(top_resolution))
    blk = lambda m: top - _log2(m[1])  # noqa: E731  block index: b{top} is 0
    mapping = lambda name: (  # noqa: E731
        rf"{name}\.(embed|fc\d+)\.(weight|bias)",
        lambda m, n={"hyper_mod_mapping": "hyper_mapping", "head_mapping": "head_mapping"}[name]: (
            f"{n}.embed.{m[2]}" if m[1] == "embed" else f"{n}.layers.{m[1][2:]}.{m[2]}"))
    return [
        (r"scalar_enc\.const_embed\.weight", lambda m: "patch_encoder.embed.weight"),
        mapping("hyper_mod_mapping"),
        mapping("head_mapping"),
        (r"b(\d+)\.fromrgb\.(weight|bias)", lambda m: f"blocks.0.fromrgb.{m[2]}" if blk(m) == 0 else None),
        (r"b(\d+)\.(conv0|conv1|skip)\.(weight|bias|affine\.weight|affine\.bias)",
         lambda m: f"blocks.{blk(m)}.{m[2]}.{m[3]}" if m[1] != "4" else None),
        (r"b4\.conv\.(weight|bias)", lambda m: f"epilogue_conv.{m[1]}"),
        (r"b4\.fc\.(weight|bias)", lambda m: f"epilogue_fc.{m[1]}"),
        (r"b4\.out\.(weight|bias)", lambda m: f"out.{m[1]}"),
    ]


# buffers the reference stores that gan3d computes: name pattern -> the gan3d value they must equal
_FIXED = [(r".*resample_filter", lambda state, k: fir_filter()),
          (r"scalar_enc\.fourier_encoder\.fourier_coefs", lambda state, k: state["patch_encoder.freqs"]),
          (r"head_mapping\.camera_scalar_enc\.fourier_encoder\.fourier_coefs",
           lambda state, k: state["camera_encoder.freqs"])]
_UNUSED = [r"mapping\.mean_camera_pose"]


_NO_RULE = object()


def _target(key: str, rules: list[Rule]):
    """The gan3d name of a reference name, None for a dropped one, _NO_RULE when no rule matches."""
    for pattern, target in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return target(m)
    return _NO_RULE


def _rules(module: torch.nn.Module, kind: str) -> list[Rule]:
    if kind == "G":
        return _generator_rules(len(module.decoder.hidden) + 1)
    return _discriminator_rules(module.block_resolutions[0])


def rename(ref_state: dict[str, torch.Tensor], rules: list[Rule]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Apply `rules` to reference names: (renamed tensors, dropped names, names no rule knows)."""
    out, dropped, unknown = {}, [], []
    for key, value in ref_state.items():
        name = _target(key, rules)
        if name is _NO_RULE:
            (dropped if any(re.fullmatch(p, key) for p, _ in _FIXED) or any(re.fullmatch(p, key) for p in _UNUSED)
             else unknown).append(key)
        elif name is None:
            dropped.append(key)
        else:
            out[name] = value
    return out, dropped, unknown


def reference_names(module: torch.nn.Module, kind: str, ref_names) -> dict[str, str]:
    """gan3d name -> the reference's, for a G (`kind='G'`) or D (`'D'`) and the reference's names."""
    rules = _rules(module, kind)
    return {name: key for key in ref_names if isinstance(name := _target(key, rules), str)}


def load_reference_state(module: torch.nn.Module, ref_state: dict[str, torch.Tensor], kind: str,
                         source: str = "reference state") -> list[str]:
    """Load a reference G (`kind='G'`) or D (`'D'`) state dict into a gan3d module built with the same shapes.

    Raises CheckpointError naming every missing, unexpected or mis-shaped tensor; returns the dropped names.
    """
    ref_state = {k: torch.as_tensor(v) for k, v in ref_state.items()}
    state, dropped, unknown = rename(ref_state, _rules(module, kind))
    own = module.state_dict()
    problems = [f"unexpected tensor '{k}'" for k in unknown]
    problems += [f"missing tensor for '{k}'" for k in own if k not in state and not _computed(k)]
    for k, v in state.items():
        if k not in own:
            problems.append(f"'{k}' has no place in the gan3d {kind}")
        elif tuple(own[k].shape) != tuple(v.shape):
            problems.append(f"'{k}' has shape {tuple(v.shape)}, the gan3d {kind} expects {tuple(own[k].shape)}")
    for key in dropped:  # fixed buffers must hold what gan3d computes
        for pattern, expected in _FIXED:
            if re.fullmatch(pattern, key):
                want = expected(own, key)
                if want.shape != ref_state[key].shape or not torch.allclose(want.float(), ref_state[key].float(), atol=1e-6):
                    problems.append(f"buffer '{key}' differs from gan3d's fixed value")
    if problems:
        raise CheckpointError(f"{source}: does not fit the gan3d {kind}: " + "; ".join(problems))
    module.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}})
    return dropped


def _computed(name: str) -> bool:
    """gan3d state that the reference does not store because gan3d derives it."""
    return name.endswith("freqs")
