"""`gan3d bench --memory` and `--plan`: the bytes one training iteration saves for backward, per image, by
module; and the largest micro-batch that fits this device.

Every tensor autograd saves passes `torch.autograd.graph.saved_tensors_hooks`' pack hook; each is charged to
the module whose forward is running (forward hooks keep a stack), or, when no forward runs, to R1's double
backward (the saved tensors `autograd.grad(create_graph=True)` makes for the second backward). A storage is
counted once however many ops save it, and parameters and buffers not at all (they exist anyway). Each phase
(Gmain, Dmain, Dreg, ...) is measured on its own: its graph lives from its forward to its backward, so the
largest phase is what training must hold at once. On CUDA, the allocator's peak is reported beside it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

from gan3d.tools import bench
from gan3d.config import ExperimentConfig


@dataclass
class SavedBytes:
    """Bytes saved for backward per image: {phase: {module: bytes}}, and the allocator's peak (CUDA)."""
    batch: int
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    peak_gb: float = 0.0

    def total(self, phase: str) -> float:
        return sum(self.phases[phase].values())

    @property
    def largest(self) -> str:
        return max(self.phases, key=self.total)

    def lines(self) -> list[str]:
        mods = sorted({m for p in self.phases.values() for m in p}, key=_order)
        head = f"{'saved for backward, MiB per image':<44}" + "".join(f"{p:>10}" for p in self.phases)
        out = [head]
        for m in mods:
            out.append(f"  {m:<42}" + "".join(f"{self.phases[p].get(m, 0) / 2**20:>10.2f}" for p in self.phases))
        out.append(f"  {'total':<42}" + "".join(f"{self.total(p) / 2**20:>10.2f}" for p in self.phases))
        out.append(f"largest phase: {self.largest} ({self.total(self.largest) / 2**20:.2f} MiB per image, batch "
                   f"{self.batch})" + (f"; CUDA peak {self.peak_gb:.2f} GB" if self.peak_gb else ""))
        return out


def _order(name: str) -> tuple:
    groups = ("G mapping", "G synthesis", "G renderer", "G decoder", "G background", "augment + blur", "D",
              "R1 double backward", "other")
    res = name.rsplit(" b", 1)[-1]  # blocks in resolution order: G's up, D's down
    num = int(res) if res.isdigit() else 0
    return next((i for i, g in enumerate(groups) if name.startswith(g)), len(groups)), -num if name[0] == "D" else num


def module_names(G: torch.nn.Module, D: torch.nn.Module) -> dict[torch.nn.Module, str]:
    """The modules saved bytes are charged to: G's mapping, each synthesis block, decoder, background; G itself
    (the renderer: rays, tri-plane lookups, volume integration); each D block and D's other parts."""
    names = {G: "G renderer (rays, lookup, integration)", G.mapping: "G mapping", G.decoder: "G decoder"}
    for block in G.synthesis.blocks:
        names[block] = f"G synthesis b{block.resolution}"
    if getattr(G, "background", None) is not None:
        names[G.background] = "G background"
    names[D] = "D (patch encoder, mappings, epilogue)"
    for i, (block, res) in enumerate(zip(D.blocks, D.block_resolutions)):
        names[block] = f"D block b{res}"
    return names


@contextlib.contextmanager
def charged(names: dict[torch.nn.Module, str], keep: set[int], into: dict[str, float]) -> Iterator[None]:
    """Within: every saved tensor's storage is added, once, to `into` under the running module's name."""
    stack: list[str] = []
    seen: set[int] = set()
    handles = []
    for module, name in names.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: stack.append(n)))
        handles.append(module.register_forward_hook(lambda m, a, o: stack.pop() and None))  # None: output kept

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in keep and ptr not in seen and storage.nbytes():
            seen.add(ptr)
            where = stack[-1] if stack else "R1 double backward"  # no forward runs: autograd.grad(create_graph)
            into[where] = into.get(where, 0.0) + storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
    finally:
        for h in handles:
            h.remove()


def saved_bytes(cfg: ExperimentConfig, device: str = "cpu", batch: int = 2) -> SavedBytes:
    """One training iteration of `cfg` at `batch` images (mid-training patch scales), each phase's saved bytes
    per image by module."""
    from gan3d.training.phases import Batch, Progress, draw_fakes, phase_loss

    dev = torch.device(device)
    parts, _, phases, reals = bench.build_gan(cfg, dev, batch)
    progress = Progress(int(cfg.training.patch.anneal_kimg / 2 * 1000), max(p.interval for p in phases))
    fakes = draw_fakes(parts, phases, batch, progress, dev)
    names = module_names(parts.G, parts.D)
    names[parts.augment] = "augment + blur"
    keep = {p.untyped_storage().data_ptr() for m in (parts.G, parts.D, parts.augment)
            for p in [*m.parameters(), *m.buffers()]}
    out = SavedBytes(batch)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for phase in phases:
        net, other = (parts.G, parts.D) if phase.net == "G" else (parts.D, parts.G)
        net.requires_grad_(True)
        other.requires_grad_(False)
        into: dict[str, float] = {}
        with charged(names, keep, into):
            loss, _ = phase_loss(phase, parts, Batch(reals.images, reals.angles, reals.labels), fakes[phase.name],
                                 progress)
        loss.backward()
        net.requires_grad_(False)
        out.phases[phase.name] = {k: v / batch for k, v in into.items()}
        del loss
    if dev.type == "cuda":
        out.peak_gb = torch.cuda.max_memory_allocated(dev) / 2**30
    return out


def compare_lean(cfg: ExperimentConfig, device: str = "cpu", batch: int = 2) -> tuple[SavedBytes, SavedBytes]:
    """saved_bytes with gan3d.nn.lean's functions (as training runs) and with PyTorch's own ops."""
    from gan3d.nn import lean

    was = lean.ENABLED
    try:
        lean.use(True)
        lean_run = saved_bytes(cfg, device, batch)
        lean.use(False)
        plain_run = saved_bytes(cfg, device, batch)
    finally:
        lean.use(was)
    return lean_run, plain_run


def plan_batch(cfg: ExperimentConfig, device: str = "cpu", budget_gb: Optional[float] = None) -> dict:
    """The largest per-worker micro-batch (batch_gpu) whose training step fits memory, and the accumulation
    that keeps the total batch. CUDA: tried for real until out-of-memory; CPU: peak RSS against MemAvailable."""
    dev = torch.device(device)
    per_worker = cfg.training.batch // cfg.run.workers
    if budget_gb is None:
        if dev.type == "cuda":
            budget_gb = torch.cuda.get_device_properties(dev).total_memory / 2**30 * 0.9
        else:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            budget_gb = int(info["MemAvailable"].split()[0]) / 2**20 * 0.8
    best, tried = 0, {}
    b = 1
    while b <= per_worker:
        if per_worker % b == 0:
            try:
                res = bench.bench_train(cfg, iters=1, warmup=0, device=device, batch=b, profile=False)
                tried[b] = res.peak_memory_gb
                if res.peak_memory_gb > budget_gb:
                    break
                best = b
            except torch.cuda.OutOfMemoryError:
                break
        b *= 2
    return {"batch_gpu": best, "accumulation": per_worker // best if best else None, "budget_gb": budget_gb,
            "peak_gb_by_batch": tried}
