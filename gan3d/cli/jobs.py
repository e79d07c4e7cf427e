"""`gan3d submit`, `status` and `logs`: gan3d commands on a Ray cluster through the Ray Jobs API."""
from __future__ import annotations

import argparse

from gan3d.cli.options import command


def register(sub) -> None:
    p = command(sub, "submit", "run a gan3d command on a Ray cluster through the Ray Jobs API",
                "gan3d submit --address http://HEAD:8265 -- gan3d sweep experiments/sweeps/smoke.yaml")
    p.add_argument("--address", required=True, help="the dashboard URL, e.g. http://HEAD:8265")
    p.add_argument("--working-dir", help="upload this directory as the job's working dir")
    p.add_argument("--pip", nargs="*", help="pip packages for the job's runtime env (e.g. a gan3d wheel)")
    p.add_argument("--env", nargs="*", default=[], help="KEY=VALUE environment variables for the job")
    p.add_argument("--no-wait", action="store_true", help="return the job id without streaming logs")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- then the command, e.g. -- gan3d sweep S.yaml")
    p.set_defaults(handler=submit)
    for name, what, handler in (("status", "the status of a submitted job", status),
                                ("logs", "the logs of a submitted job", logs)):
        q = command(sub, name, what, f"gan3d {name} raysubmit_XXXX --address http://HEAD:8265")
        q.add_argument("job_id")
        q.add_argument("--address", required=True, help="the dashboard URL, e.g. http://HEAD:8265")
        q.set_defaults(handler=handler)


def submit(args) -> int:
    from gan3d.orchestrate import jobs

    entry = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    env = dict(item.split("=", 1) for item in args.env)
    job_id, state = jobs.submit(args.address, entry, args.working_dir, env, args.pip, wait=not args.no_wait)
    print(f"gan3d: job {job_id}: {state}")
    return 0 if args.no_wait or state == "SUCCEEDED" else 1


def status(args) -> int:
    from gan3d.orchestrate import jobs

    print(jobs.status(args.address, args.job_id))
    return 0


def logs(args) -> int:
    from gan3d.orchestrate import jobs

    print(jobs.logs(args.address, args.job_id), end="")
    return 0
