"""Reading a pickled reference snapshot without running anything it carries: a restricted unpickler and a
bounded walk over what it returns.

The reference's networks are StyleGAN2-ADA "persistent classes": each pickles the source code of its module and
a reconstruct call that would execute that source; their init kwargs are dnnlib EasyDicts and their configs
OmegaConf nodes. The unpickler resolves only an allow-list of globals: torch's tensor/storage rebuild functions
(storages are read with torch.load(weights_only=True)), plain containers, numpy scalars and dtypes, OmegaConf's
config containers, EasyDict (read as a plain dict, under every module path the reference's code pickles it
from), torch.optim optimizers (read as data), and the persistence reconstruct hook, which is intercepted: it
keeps the pickled state (parameters, buffers, init kwargs, submodules) as data and never compiles the source.
torch.nn container modules are kept as data too. Any other global is refused, naming it and the file.

Work is bounded by the file, whatever it holds: every tensor view is checked against its storage (a view past the
end would make torch grow the storage with uninitialised memory), numpy arrays of Python objects are refused, the
snapshot's trees are walked once per object (shared references count once, so a file of shared dicts cannot
expand exponentially), to a limited depth, and within a budget of objects proportional to the file's size.
"""
from __future__ import annotations

import collections
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from gan3d.errors import CheckpointError, first_line

PERSISTENCE_MODULES = ("torch_utils.persistence", "src.torch_utils.persistence")
MAX_DEPTH = 64  # nesting of modules / config nodes a snapshot may have (the reference's: about 8)
OBJECTS_PER_KB = 32  # objects walked per KiB of file, plus a floor: far more than any real snapshot needs
EASYDICT_MODULES = ("dnnlib", "dnnlib.util", "src.dnnlib", "src.dnnlib.util")  # StyleGAN2-ADA's and EpiGRAF's
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop")


class PersistentState:
    """What the persistence hook would have rebuilt: the class name, the pickled __dict__; the source is
    kept only as its length (it is never compiled)."""

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or "state" not in meta:
            raise CheckpointError("a persistent object without the expected metadata")
        self.class_name = str(meta.get("class_name", "?"))
        self.state = meta["state"] if isinstance(meta["state"], dict) else {}
        self.source_chars = len(meta.get("module_src") or "")


class OptimizerState:
    """A pickled torch.optim optimizer kept as its pickled state (never an optimizer); `class_name` is set on the
    per-class subclass the unpickler hands out."""
    class_name = "?"

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


def _optimizer_state_class(name: str) -> type:
    return type(f"{name}State", (OptimizerState,), {"class_name": name})


class ModuleState:
    """A plain torch.nn module (Sequential, Embedding, ...) kept as its pickled __dict__, without its class."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


class Refused(Exception):
    """Raised while unpickling; read_snapshot names the file."""


def _load_storage(data: bytes):
    """torch.storage._load_from_bytes, but tensors-only: the blob is a torch.save of one storage."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise Refused("a tensor storage in it holds a pickle of objects, not tensors") from None


def _elements(storage) -> int:
    if isinstance(storage, torch.UntypedStorage):
        return storage.nbytes()
    with warnings.catch_warnings():  # torch.load's own storages are TypedStorages, whose accessors warn
        warnings.simplefilter("ignore")
        return storage.size()


def _rebuild_tensor(storage, offset, size, stride, *args):
    """torch._utils._rebuild_tensor_v2 for views that lie inside their storage (else torch would grow it)."""
    size, stride = tuple(size), tuple(stride)
    if (not isinstance(offset, int) or offset < 0 or len(size) != len(stride) or any(s < 0 for s in size)
            or any(s < 0 for s in stride)):
        raise Refused(f"a tensor view with offset {offset}, size {size}, stride {stride} is malformed")
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= _elements(storage):
        raise Refused(f"a tensor view (offset {offset}, size {size}, stride {stride}) reaches past the end of its "
                      f"storage of {_elements(storage)} elements")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, *args)


def _dtype(obj, align=False, copy=False):
    """numpy.dtype, but never one holding Python objects (their items would be unpickled objects)."""
    import numpy as np

    d = np.dtype(obj, align, copy)
    if d.hasobject:
        raise Refused(f"a numpy array of Python objects (dtype {d})")
    return d


def _allowed() -> dict[tuple[str, str], Any]:
    import numpy as np
    from omegaconf import base, dictconfig, listconfig, nodes

    allow: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "set"): set, ("builtins", "tuple"): tuple,
        ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice, ("builtins", "object"): object,
        ("builtins", "int"): int, ("builtins", "float"): float, ("builtins", "str"): str, ("builtins", "bool"): bool,
        ("builtins", "bytes"): bytes, ("builtins", "complex"): complex,
        ("typing", "Any"): Any,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch", "Size"): torch.Size,
        ("numpy", "dtype"): _dtype,
        ("omegaconf.dictconfig", "DictConfig"): dictconfig.DictConfig,
        ("omegaconf.listconfig", "ListConfig"): listconfig.ListConfig,
        ("omegaconf.base", "ContainerMetadata"): base.ContainerMetadata,
        ("omegaconf.base", "Metadata"): base.Metadata,
    }
    for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode"):
        allow[("omegaconf.nodes", name)] = getattr(nodes, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allow[(mod, "scalar")] = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
        allow[(mod, "_reconstruct")] = (np._core.multiarray._reconstruct if hasattr(np, "_core")
                                        else np.core.multiarray._reconstruct)
    allow[("numpy", "ndarray")] = np.ndarray
    for dtype in ("float32", "float64", "int64", "int32", "bool_", "float16"):
        allow[("numpy", dtype)] = getattr(np, dtype)
    for mod in PERSISTENCE_MODULES:
        allow[(mod, "_reconstruct_persistent_obj")] = PersistentState
    for mod in EASYDICT_MODULES:  # a dict subclass: rebuilt as a plain dict, its items set by the pickle
        allow[(mod, "EasyDict")] = dict
    for name in OPTIMIZERS:
        state = _optimizer_state_class(name)
        allow[(f"torch.optim.{name.lower()}", name)] = allow[("torch.optim", name)] = state
    return allow


_TORCH_MODULE = re.compile(r"torch\.nn\.modules\.\w+")


class SafeUnpickler(pickle.Unpickler):
    """Resolves only the allow-list; torch.nn modules become ModuleState; everything else is refused."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source, self.allow = source, _allowed()

    def find_class(self, module: str, name: str):
        if (module, name) in self.allow:
            return self.allow[(module, name)]
        if _TORCH_MODULE.fullmatch(module) and name[:1].isupper():
            return ModuleState
        raise CheckpointError(f"{self.source}: refuses to load '{module}.{name}' (not a tensor, container or "
                              f"network state; nothing from this file was executed)")

    def persistent_load(self, pid):
        raise CheckpointError(f"{self.source}: unexpected persistent id {str(pid)[:60]} (not a reference snapshot)")


def read_snapshot(path: str | Path) -> dict:
    """The snapshot's top-level dict, networks as PersistentState / ModuleState trees. Nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: snapshot not found")
    with open(path, "rb") as f:
        try:
            data = SafeUnpickler(f, str(path)).load()
        except CheckpointError:
            raise
        except Refused as e:
            raise CheckpointError(f"{path}: refused: {e} (nothing from this file was executed)") from None
        except Exception as e:  # truncated or not a pickle at all
            raise CheckpointError(f"{path}: not a readable snapshot ({type(e).__name__}: {first_line(e, 120)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of networks (G, D, G_ema, ...), got {type(data).__name__}")
    return data


class Walk:
    """The budget of one snapshot's traversal: objects visited (shared ones once) and depth."""

    def __init__(self, source: str, file_bytes: int):
        self.source, self.left = source, max(100_000, file_bytes // 1024 * OBJECTS_PER_KB)
        self._refs: dict[str, int] = {}

    def references(self, key: str) -> int:
        """How often the reference at `key` was followed (a loop keeps coming back to it)."""
        self._refs[key] = self._refs.get(key, 0) + 1
        return self._refs[key]

    def step(self, depth: int) -> None:
        self.left -= 1
        if self.left < 0:
            raise CheckpointError(f"{self.source}: holds more objects than a snapshot of its size can "
                                  f"(nothing from this file was executed)")
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{self.source}: nested deeper than {MAX_DEPTH} levels; a snapshot's networks and "
                                  f"configs are not (nothing from this file was executed)")


def module_state(node) -> dict:
    """A reconstructed module's pickled state (parameters, buffers, init kwargs, submodules), or {}."""
    return node.state if isinstance(node, (PersistentState, ModuleState)) else {}


def flatten(node, walk: Walk, prefix: str = "", depth: int = 0, seen: Optional[set] = None) -> dict[str, torch.Tensor]:
    """A module tree's state_dict: parameters and persistent buffers under dotted names. A module reached twice
    (shared) is listed once, under its first name."""
    seen = set() if seen is None else seen
    walk.step(depth)
    if id(node) in seen:
        return {}
    seen.add(id(node))
    s = module_state(node)
    out: dict[str, torch.Tensor] = {}
    skip = set(s.get("_non_persistent_buffers_set") or ())
    for k, v in (s.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = torch.as_tensor(v).detach()
    for k, v in (s.get("_buffers") or {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = torch.as_tensor(v).detach()
    for k, child in (s.get("_modules") or {}).items():
        if child is not None:
            out.update(flatten(child, walk, f"{prefix}{k}.", depth + 1, seen))
    return out
