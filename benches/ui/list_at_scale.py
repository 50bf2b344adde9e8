"""How fast the dashboard's jobs page is answered with many jobs stored: creates N jobs (default
100,000) through the REST API of a release binary on the embedded store, then times the calls the
Jobs page makes (a page of 20, filtered by status, type and name prefix, a deep page) and the
overview's counts, as the service's own request-duration histogram and as the client sees them.

    cargo build --release && python3 benches/ui/list_at_scale.py [N]
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
data = tempfile.mkdtemp(prefix="scheduler-list-")
service = subprocess.Popen(
    [os.path.join(ROOT, "target/release/scheduler"), "--host", "127.0.0.1", "--port", str(port),
     "--store", "embedded", "--data-dir", data],
    env={**os.environ, "RUST_LOG": "warn"}, stdout=subprocess.DEVNULL)
try:
    for _ in range(200):
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
            break
        except OSError:
            time.sleep(0.05)

    made = [0]
    lock = threading.Lock()

    def creator(first, count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(first, first + count):
            kind = "EMAIL" if i % 10 == 0 else "SMS"
            body = {"name": f"job {i:06}", "jobType": kind,
                    "schedule": {"cron": f"{i % 60} {i % 24} * * *", "timezone": "Europe/Berlin"},
                    "jobData": {"To": "+100"} if kind == "SMS" else
                    {"SourceAddress": "a@example.com", "DestinationAddress": "b@example.com",
                     "Subject": "s", "Message": "m"}}
            if i % 7 == 0:
                body["schedule"] = {"runAt": "2031-01-01T00:00:00Z"}
            conn.request("POST", "/api/v1/jobs", json.dumps(body), {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 201, answer.status
        with lock:
            made[0] += count

    start = time.time()
    threads = [threading.Thread(target=creator, args=(t * (N // 16), N // 16)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"created {made[0]} jobs in {time.time() - start:.0f} s")

    calls = {
        "a page of 20": "/api/v1/jobs?size=20",
        "by status": "/api/v1/jobs?status=SCHEDULED&size=20",
        "by type": "/api/v1/jobs?jobType=EMAIL&size=20",
        "by name prefix": "/api/v1/jobs?name=job%200123&size=20",
        "status and type": "/api/v1/jobs?status=SCHEDULED&jobType=EMAIL&size=20",
        "page 2000": "/api/v1/jobs?size=20&page=2000",
        "a count (size=1)": "/api/v1/jobs?status=PAUSED&size=1",
        "due in the next hour": "/api/v1/jobs?dueBefore=2026-12-31T00:00:00Z&size=100",
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    print(f"{'call':<24} {'p50 ms':>8} {'max ms':>8}  (20 calls each, one at a time, client side)")
    for name, path in calls.items():
        times = []
        for _ in range(20):
            t = time.perf_counter()
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            times.append((time.perf_counter() - t) * 1000)
            assert answer.status == 200
        print(f"{name:<24} {statistics.median(times):>8.1f} {max(times):>8.1f}")
    sizes = sum(os.path.getsize(os.path.join(ROOT, "src/ui", f))
                for f in os.listdir(os.path.join(ROOT, "src/ui")) if not f.endswith(".rs"))
    print(f"dashboard assets: {sizes} bytes")
finally:
    service.kill()
