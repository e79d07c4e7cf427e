"""Ray's lifecycle for gan3d's drivers: start a local Ray of gan3d's own or join a cluster within a bounded
time, keep Ray's own INFO lines off the console, and the environment every worker gets (never a secret)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from gan3d.config import ExperimentConfig
from gan3d.errors import ConfigError, Gan3dError
from gan3d.orchestrate import leftovers
from gan3d.training.stop import NAMESPACE


def quiet_ray(local: bool) -> None:
    """Keep Ray's and Ray Train's own INFO lines off the console (they stay in Ray's session logs): Train's
    print patch would tee every worker print to stderr a second time; a local single-machine run has no
    node preemption to watch for (its watcher logs an error-level line at start); Ray's notice that it uses
    the token it found is dropped (its warning when auth is *off* still shows)."""
    import logging

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if local:
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

        class _TokenOnNotice(logging.Filter):
            def filter(self, record):
                return "Token authentication is enabled" not in record.getMessage()

        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_TokenOnNotice())


def check_reachable(address: str, timeout_s: float) -> None:
    """One clear line, within `timeout_s`, when nothing listens at a cluster address (Ray itself retries for
    ever, printing 'Failed to connect to GCS' every ~40 s)."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]  # ray://HOST:PORT (client) or HOST:PORT (GCS)
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT of the Ray head (GCS port, default 6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
        raise Gan3dError(f"--address {address}: no Ray cluster answers there ({why} after at most {timeout_s:g} s); "
                         f"check that the head node runs (`ray status --address {hostport}`) and that port {port} "
                         f"is reachable from this machine (run.connect_timeout_s sets the wait)") from None


def ensure_ray(address: Optional[str], verbose: bool = False, timeout_s: float = 30.0,
                owner_dir: Optional[Path] = None) -> Optional[Path]:
    """Start (or join) Ray unless this process already has; returns Ray's log directory. A local Ray started
    for `owner_dir` (a run or sweep dir) is recorded there, and what an earlier killed driver's local Ray left
    running is stopped first (gan3d.orchestrate.leftovers)."""
    import logging

    if not verbose:  # rank 0's tick lines as gan3d prints them, without Ray's "(RayTrainWorker pid=...)" prefix
        os.environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")  # read when ray is first imported
    import ray

    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own variable names a cluster too
    if address:
        check_reachable(address, timeout_s)
    elif owner_dir is not None:
        stopped = leftovers.stop_leftovers(owner_dir)
        if stopped:
            print(f"gan3d: stopped {stopped} process(es) of the local Ray an earlier, killed run of {owner_dir} "
                  "left running", flush=True)
    if not verbose:
        quiet_ray(local=not address)
    env = storage_env()
    port = None
    if not address:  # Ray's own actors (Train's placement-group cleaner) find "their" cluster by RAY_ADDRESS,
        port = free_port()  # else by scanning the machine, which fails beside another Ray: tell them which
        env["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"  # the GCS listens on the node's address
    elif "://" not in address and address not in ("auto", "local"):
        env["RAY_ADDRESS"] = address  # a cluster's GCS (HOST:PORT), the same for its actors
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    try:
        if port is not None:
            os.environ["RAY_GCS_SERVER_PORT"] = str(port)  # where the new cluster's GCS listens
        ctx = ray.init(address=address or "local", namespace=NAMESPACE, log_to_driver=True,  # never a stray `ray start`
                       logging_level=logging.INFO if verbose else logging.WARNING,
                       runtime_env={"env_vars": env} if env else None)
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous
    if not address and owner_dir is not None:
        leftovers.record_local_ray(owner_dir)
    session = ctx.address_info.get("session_dir")
    return Path(session) / "logs" if session else None


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def link_ray_logs(run_dir: Path, logs: Optional[Path]) -> Optional[Path]:
    """run_dir/ray_logs -> this Ray session's log directory (Ray's and Ray Train's own lines live there)."""
    if logs is None:
        return None
    link = run_dir / "ray_logs"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(logs, target_is_directory=True)
    return link


def worker_env(cfg: ExperimentConfig) -> dict:
    from gan3d.track.wandb_run import resolve_mode

    env = {"WANDB_MODE": resolve_mode(cfg.logging), "PYTHONUNBUFFERED": "1",
           # prints reach the console once, through Ray's log forwarding (Train's patch would tee them to stderr)
           "RAY_TRAIN_ENABLE_PRINT_PATCH": os.environ.get("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")}
    for key in ("GAN3D_INCEPTION_WEIGHTS", "GAN3D_CACHE", "WANDB_DIR"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return {**env, **storage_env()}


# What pyarrow's S3 / GCS filesystems read and is not secret: forwarded from the driver, so the Train controller
# (which writes the checkpoint snapshot) and the workers reach the same bucket and endpoint as the driver.
STORAGE_ENV = ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
               "GOOGLE_APPLICATION_CREDENTIALS")
# Never forwarded: Ray writes a runtime environment's variables in plain text to its agent log. A local cluster
# started by gan3d inherits them from the driver's environment anyway; on a cluster, each node brings its own
# (instance roles, the nodes' environment, ~/.aws, `wandb login`).
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "WANDB_API_KEY")


def storage_env() -> dict:
    return {k: os.environ[k] for k in STORAGE_ENV if os.environ.get(k)}
