"""`gan3d submit / status / logs`: run gan3d commands on a Ray cluster through the Ray Jobs API (the
dashboard's HTTP endpoint, e.g. http://HEAD:8265), with a runtime env, streaming the job's logs."""
from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

from gan3d.errors import Gan3dError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise Gan3dError(f"--address {address}: this cluster uses Ray token authentication; set RAY_AUTH_MODE=token "
                         f"and its token in RAY_AUTH_TOKEN (or a file in RAY_AUTH_TOKEN_PATH)") from None
    except Exception as e:  # connection errors come in several types
        raise Gan3dError(f"--address {address}: no Ray Jobs API there ({type(e).__name__}: {str(e)[:200]}); "
                         f"expected the dashboard URL, e.g. http://HEAD:8265") from None


def submit(address: str, entrypoint: Sequence[str], working_dir: Optional[str] = None, env: Optional[dict] = None,
           pip: Optional[Sequence[str]] = None, wait: bool = True, out=sys.stdout, poll_s: float = 1.0) -> tuple[str, str]:
    """Submit `entrypoint` (argv) as a Ray job; with `wait`, stream its logs until it ends.
    Returns (job id, final status or the status at return)."""
    import shlex

    if not entrypoint:
        raise Gan3dError("gan3d submit: give the command after --, e.g. gan3d submit --address URL -- gan3d sweep S.yaml")
    runtime_env: dict = {}
    if working_dir:
        runtime_env["working_dir"] = working_dir
    if env:
        runtime_env["env_vars"] = dict(env)
    if pip:
        runtime_env["pip"] = list(pip)
    client = _client(address)
    job_id = client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env or None)
    print(f"gan3d: submitted job {job_id} to {address}", file=out, flush=True)
    if not wait:
        return job_id, str(client.get_job_status(job_id))
    return job_id, follow(client, job_id, out, poll_s)


def follow(client, job_id: str, out=sys.stdout, poll_s: float = 1.0) -> str:
    """Print new log text as it arrives until the job reaches a terminal status; returns that status."""
    shown = 0
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        text = client.get_job_logs(job_id)
        if len(text) > shown:
            out.write(text[shown:])
            out.flush()
            shown = len(text)
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def status(address: str, job_id: str) -> str:
    return str(_client(address).get_job_status(job_id)).split(".")[-1]


def logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)
