"""The stop flag: one named actor per run, on the driver's node, that carries the driver's word to the workers
(finish the step, checkpoint, stop: Ctrl-C or SIGTERM) and theirs to it (an error no restart fixes: bad data, a
bad config, a full disk, said once by the driver as a `FatalError`). The driver half starts it and installs
the signal handlers; the worker half (`StopFlagClient`, used by training.session) asks and tells it."""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Optional

STOP_ACTOR_PREFIX = "gan3d-stop-"
NAMESPACE = "gan3d"  # named actors of gan3d live here, whatever namespace the driver uses


@dataclass(frozen=True)
class FatalError:
    """An error a worker hit that no restart can fix: its gan3d error class name and its one line."""
    kind: str
    message: str

    def exception(self) -> Exception:
        """The gan3d error it was (Gan3dError for a kind gan3d does not know)."""
        from gan3d import errors

        cls = getattr(errors, self.kind, errors.Gan3dError)
        return (cls if isinstance(cls, type) and issubclass(cls, errors.Gan3dError) else errors.Gan3dError)(self.message)


def start_flag(run_name: str):
    """The run's stop flag (a leftover of an interrupted driver is replaced), placed on this driver's node."""
    import ray

    @ray.remote(num_cpus=0)
    class StopFlag:
        """The driver's word to the workers (stop after this step) and theirs to it (an error no retry fixes)."""

        def __init__(self):
            self.value, self.message = False, None

        def set(self):
            self.value = True

        def is_set(self) -> bool:
            return self.value

        def fail(self, kind: str, message: str):
            self.value, self.message = True, (kind, message)

        def error(self):
            return self.message

    name = STOP_ACTOR_PREFIX + run_name
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))  # a leftover from an interrupted driver
    except ValueError:
        pass
    # On the driver's node: the flag must outlive the loss of any worker node (a 0-CPU actor lands anywhere,
    # and one on a node that died took the run down with it in the two-node test).
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return StopFlag.options(name=name, namespace=NAMESPACE, scheduling_strategy=here).remote()


def fatal_error(stop_flag) -> Optional[FatalError]:
    """The error a worker left on the stop flag, or None; a flag lost with its node holds no error."""
    import ray

    try:
        found = ray.get(stop_flag.error.remote(), timeout=30)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None
    return FatalError(*found) if found else None


def install_stop_handlers(stop_flag) -> dict:
    """First Ctrl-C / SIGTERM: the workers finish the step, checkpoint and stop. A second one aborts."""
    state = {"count": 0}

    def handler(signum, frame):
        state["count"] += 1
        if state["count"] > 1:
            raise KeyboardInterrupt
        print("gan3d: stopping after the current step and writing a checkpoint (again to abort)", flush=True)
        stop_flag.set.remote()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. inside a Tune trainable)
            pass
    return previous


def restore_handlers(previous: dict) -> None:
    for sig, h in previous.items():
        signal.signal(sig, h)


class StopFlagClient:
    """A worker's side of its run's stop flag, found by name. No flag (a job submitted without a gan3d driver,
    a sweep trial) means: never stop early, and no driver to tell of an error."""

    def __init__(self, run_name: str):
        self.name, self._actor = STOP_ACTOR_PREFIX + run_name, None

    def _flag(self):
        import ray

        if self._actor is None:
            self._actor = ray.get_actor(self.name, namespace=NAMESPACE)
        return self._actor

    def is_set(self) -> bool:
        import ray

        try:
            return bool(ray.get(self._flag().is_set.remote(), timeout=10))
        except (ValueError, ray.exceptions.GetTimeoutError):
            return False  # no driver flag: never stop early
        except ray.exceptions.RayActorError:  # the flag's node died: a stop flag must not stop training
            self._actor = None
            return False

    def error(self) -> Optional[FatalError]:
        """The error an earlier attempt of this run recorded (bad data, config, checkpoint), if any."""
        import ray

        try:
            found = ray.get(self._flag().error.remote(), timeout=10)
        except Exception:  # no driver flag, or it is gone: nothing recorded
            return None
        return FatalError(*found) if found else None

    def fail(self, error: Exception) -> bool:
        """Record an error no restart fixes for the driver to say once; False when there is no driver to tell."""
        import ray

        try:
            ray.get(self._flag().fail.remote(type(error).__name__, str(error)), timeout=10)
            return True
        except Exception:
            return False
