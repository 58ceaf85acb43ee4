#!/usr/bin/env python3
"""Side-by-side deploy benchmark: `gantry deploy ecs` vs ecs-deploy (`ecs deploy`, PyPI) against
the same moto server, both with `--timeout -1` (moto never completes a rollout).

Measured per run, from the moment the process is spawned:
  - to_update: until the UpdateService request reaches the (timestamping) proxy in front of moto;
  - total:     until the process exits.
Prints medians and the ratio ecs-deploy / gantry. Run through bench/deploy/run.sh.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"port {port} never opened")


def update_times(log, since):
    with open(log) as f:
        for line in f:
            t, op = line.split(" ", 1)
            if float(t) >= since and op.strip().endswith("UpdateService"):
                return float(t)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", required=True)
    ap.add_argument("--ecs", required=True, help="ecs-deploy's `ecs` executable")
    ap.add_argument("--moto", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    moto_port, proxy_port = free_port(), free_port()
    log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"gantry-bench-proxy-{os.getpid()}.log")
    procs = [
        subprocess.Popen([a.moto, "-H", "127.0.0.1", "-p", str(moto_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_port(moto_port)
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "proxy.py"), str(proxy_port), str(moto_port), log]))
        wait_port(proxy_port)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION="eu-west-1", AWS_REGION="eu-west-1",
                   AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy_port}")
        env.pop("AWS_PROFILE", None)
        ecs = boto3.client("ecs", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="eu-west-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        ecs.create_cluster(clusterName="bench")
        for svc in ("svc-gantry", "svc-ecsdeploy"):
            td = ecs.register_task_definition(family=svc, containerDefinitions=[
                {"name": "app", "image": "registry.local/app:0", "memory": 128,
                 "environment": [{"name": "A", "value": "1"}]}])
            ecs.create_service(cluster="bench", serviceName=svc, desiredCount=1,
                               taskDefinition=td["taskDefinition"]["taskDefinitionArn"])
        tools = {
            "gantry": lambda i: [a.gantry, "deploy", "ecs", "bench", "svc-gantry", "--tag", f"v{i}", "--timeout", "-1"],
            "ecs-deploy": lambda i: [a.ecs, "deploy", "bench", "svc-ecsdeploy", "--tag", f"v{i}", "--timeout", "-1",
                                     "--region", "eu-west-1"],
        }
        results = {k: {"to_update": [], "total": []} for k in tools}
        for i in range(1, a.runs + 1):
            for name, argv in tools.items():
                t0 = time.time()
                r = subprocess.run(argv(i), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                t1 = time.time()
                if r.returncode != 0:
                    sys.exit(f"{name} failed (exit {r.returncode}):\n{r.stderr}")
                tu = update_times(log, t0)
                if tu is None:
                    sys.exit(f"{name}: no UpdateService seen")
                results[name]["to_update"].append(tu - t0)
                results[name]["total"].append(t1 - t0)
        # Both services must now run the last revision each tool registered.
        for svc in ("svc-gantry", "svc-ecsdeploy"):
            td = ecs.describe_services(cluster="bench", services=[svc])["services"][0]["taskDefinition"]
            img = ecs.describe_task_definition(taskDefinition=td)["taskDefinition"]["containerDefinitions"][0]["image"]
            assert img.endswith(f":v{a.runs}"), (svc, img)
        med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
        print(f"runs: {a.runs} each, moto + timestamping proxy, --timeout -1")
        print(f"{'tool':<12} {'to UpdateService (median)':>26} {'whole deploy (median)':>22}")
        for k in tools:
            print(f"{k:<12} {med[k]['to_update'] * 1000:>23.0f} ms {med[k]['total'] * 1000:>19.0f} ms")
        ru = med["ecs-deploy"]["to_update"] / med["gantry"]["to_update"]
        rt = med["ecs-deploy"]["total"] / med["gantry"]["total"]
        print(f"ratio ecs-deploy/gantry: to UpdateService {ru:.2f}x, whole deploy {rt:.2f}x")
        if a.out:
            os.makedirs(os.path.dirname(a.out), exist_ok=True)
            with open(a.out, "w") as f:
                json.dump({"runs": a.runs, "samples": results, "median": med,
                           "ratio": {"to_update": ru, "total": rt}}, f, indent=2)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        if os.path.exists(log):
            os.remove(log)


if __name__ == "__main__":
    main()
