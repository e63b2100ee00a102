"""Load on a Docker Engine API daemon: CLIENTS concurrent Docker SDK
clients for DURATION seconds, each doing one kind of request over and
over (a build, `run --rm busybox true`, or an image listing), then the
latency of each kind (p50, p99), the requests that failed, and what the
daemon left behind (containers, its processes). Prints one JSON object.

    python daemon_load.py unix:///path.sock DURATION CLIENTS DAEMON_PID
"""

import io
import json
import os
import sys
import threading
import time

import docker


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def descendants(pid):
    """Processes under `pid` (by /proc's PPid)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("PPid:"):
                        parents[int(entry)] = int(line.split()[1])
        except OSError:
            pass
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def main():
    url, duration, clients, daemon_pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    latencies = {"build": [], "run": [], "images": []}
    failures = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    before = len(descendants(daemon_pid))

    def client(index):
        api = docker.APIClient(base_url=url, version="1.41", timeout=300)
        kind = ["build", "run", "run", "images", "images"][index % 5]
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                if kind == "images":
                    api.images()
                elif kind == "run":
                    container = api.create_container(
                        "busybox:latest", ["true"],
                        host_config=api.create_host_config(network_mode="none"))
                    api.start(container)
                    code = api.wait(container)["StatusCode"]
                    api.remove_container(container)
                    if code != 0:
                        raise RuntimeError(f"exit {code}")
                else:
                    script = io.BytesIO(f"FROM busybox:latest\nRUN echo client-{index}\n".encode())
                    for chunk in api.build(fileobj=script, network_mode="none", rm=True, decode=True):
                        if "error" in chunk:
                            raise RuntimeError(chunk["error"])
            except Exception as error:  # every failure is counted, none hides
                with lock:
                    failures.append(f"{kind}: {error}")
                continue
            with lock:
                latencies[kind].append(time.monotonic() - start)
        api.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    api = docker.APIClient(base_url=url, version="1.41")
    left = api.containers(all=True)
    time.sleep(1)
    after = len(descendants(daemon_pid))
    print(json.dumps({
        "requests": {k: len(v) for k, v in latencies.items()},
        "p50_ms": {k: round(percentile(v, 0.5) * 1000, 1) if v else None for k, v in latencies.items()},
        "p99_ms": {k: round(percentile(v, 0.99) * 1000, 1) if v else None for k, v in latencies.items()},
        "failed": len(failures),
        "failures": failures[:10],
        "containers_left": len(left),
        "processes_before": before,
        "processes_after": after,
    }))


if __name__ == "__main__":
    main()
