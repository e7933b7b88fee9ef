"""The client's CPU per ranged GET, by S3 client: why the site reader has its own (converters/s3reads.py).

    python benchmarks/get_cost.py                 # 300 GETs of 700 KB per client, 3 rounds, about a minute
    python benchmarks/get_cost.py --size 64000 --gets 1000

A training loader makes one GET per site (an RxRx1 site is about 700 KB of zstd-3 chunk), so the CPU a client
spends per GET bounds how many sites a core can feed. Measured here against a moto S3 server in its own process
(`moto_server`, on 127.0.0.1), so the CPU counted (this process's, `time.process_time`) is the client's alone:

- s3reads   converters/s3reads.py, what `SiteDataset` and `SiteStream` use on S3 (http.client + botocore's signer);
- s3fs      `S3FileSystem.cat_file(path, start, end)`, what they used before (aiobotocore under fsspec's sync);
- boto3     `client.get_object(Range=...)["Body"].read()`;
- obstore   `obstore.get_range`, the baseline: fastest, but its runtime hangs in forked DataLoader workers.

Each client reads the same --gets ranges (at offsets cycling through a 4 MB object) in rounds, in rotating order;
reported: the median CPU ms per GET and the ratio to obstore's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BUCKET, KEY, OBJECT = "getcost", "object", 4_000_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clients(endpoint: str, size: int) -> dict[str, Callable[[int], bytes]]:
    """A function per client that GETs `size` bytes at offset `i`."""
    import boto3
    import obstore
    import s3fs
    from botocore.config import Config
    from obstore.store import from_url

    from converters.s3reads import S3Reads

    ours = S3Reads(BUCKET, {"endpoint": endpoint}, 5, 30, 8)
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 1}))
    store = from_url(f"s3://{BUCKET}", config={"endpoint": endpoint}, client_options={"allow_http": True})
    return {
        "s3reads": lambda i: ours.get(KEY, i, size),
        "s3fs": lambda i: fs.cat_file(f"{BUCKET}/{KEY}", start=i, end=i + size),
        "boto3": lambda i: client.get_object(Bucket=BUCKET, Key=KEY, Range=f"bytes={i}-{i + size - 1}")["Body"].read(),
        "obstore": lambda i: bytes(obstore.get_range(store, KEY, start=i, length=size)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=700_000, help="bytes per GET")
    parser.add_argument("--gets", type=int, default=300, help="GETs per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    port = free_port()
    server = subprocess.Popen([shutil.which("moto_server") or "moto_server", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint)
        for _ in range(100):
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # the server is still starting
                time.sleep(0.1)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=os.urandom(OBJECT))
        offsets = [(i * args.size) % (OBJECT - args.size) for i in range(args.gets)]
        runs = clients(endpoint, args.size)
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            names = list(runs)[round_ % len(runs):] + list(runs)[:round_ % len(runs)]
            for name in names:
                assert len(runs[name](0)) == args.size  # warm: connections open, credentials found
                start = time.process_time()
                for i in offsets:
                    runs[name](i)
                cpu[name].append((time.process_time() - start) / args.gets * 1000)
    finally:
        server.terminate()
        server.wait()
    base = statistics.median(cpu["obstore"])
    print(f"client CPU per GET of {args.size:,} bytes (median of {args.rounds} rounds of {args.gets}):")
    for name, values in cpu.items():
        print(f"  {name:8s} {statistics.median(values):6.2f} ms   {statistics.median(values) / base:5.2f}x obstore")


if __name__ == "__main__":
    main()
