"""`gan3d submit / status / logs`: run gan3d commands on a Ray cluster through the Ray Jobs API (the
dashboard's HTTP endpoint, e.g. http://HEAD:8265), with a runtime env, streaming the job's logs."""
from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

from gan3d.errors import Gan3dError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 60.0  # a head that just started has no job agent for a while: submissions are retried this long
NO_AGENT = "No available agent to submit job"


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
    job_id = _submit_when_ready(client, address, shlex.join(entrypoint), runtime_env or None)
    print(f"gan3d: submitted job {job_id} to {address}", file=out, flush=True)
    if not wait:
        return job_id, str(client.get_job_status(job_id))
    return job_id, follow(client, job_id, out, poll_s)


def _submit_when_ready(client, address: str, entrypoint: str, runtime_env: Optional[dict],
                       wait_s: float = AGENT_WAIT_S) -> str:
    """submit_job, retried while the head's job agent is still coming up (Ray answers NO_AGENT then), for at most
    `wait_s`; any other refusal, or the wait running out, is one line."""
    from gan3d.errors import first_line

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except Exception as e:  # the client raises RuntimeError with the server's text, and connection errors
            if NO_AGENT not in str(e):
                raise Gan3dError(f"--address {address}: the job was not accepted ({first_line(e)})") from None
            if time.monotonic() > deadline:
                raise Gan3dError(f"--address {address}: the cluster's head has no job agent after {wait_s:g} s "
                                 f"('{NO_AGENT}'); check `ray status` on the head, then resubmit") from None
        time.sleep(1.0)


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
