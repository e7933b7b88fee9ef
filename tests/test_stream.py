"""`SiteStream` on a real S3 server: moto on 127.0.0.1 behind a proxy that adds 3 ms to every request.

The store holds 32 sites (4 plates x 4 wells x 2 sites, 6 channels of 128x128) converted from PNG tiles cut
from the real RxRx1 images (sources.write_rxrx_source); every pixel a stream yields is compared with its
source tile. Tests that need torch (DataLoader workers, torch.distributed) skip without it.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

import converters as pz
from converters.errors import BucketError, OptionError, StoreError
from latency_proxy import LatencyProxy
from sources import write_metadata, write_rxrx_source

PLATES = {(f"HUVEC-{e:02d}", p): ["B02", "B03", "C02", "C05"] for e in (1, 2) for p in (1, 2)}
SITES = 32


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("stream")
    written = write_rxrx_source(root / "images", PLATES, size=128)
    write_metadata(root / "metadata.csv", PLATES)
    return root, written


def convert(s3, root: Path, name: str) -> str:
    """The source converted into s3://stream/{name}.zarr."""
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="stream")
    url = f"s3://stream/{name}.zarr"
    pz.convert(root / "images", url, "rxrx1_demo", root / "metadata.csv")
    return url


@pytest.fixture(scope="module")
def store(s3, source) -> str:
    return convert(s3, source[0], "store")


@pytest.fixture(scope="module")
def proxy(s3):
    proxy = LatencyProxy(s3.endpoint, latency=0.003).start()
    yield proxy
    proxy.stop()


def stream(url: str, proxy: LatencyProxy, **kwargs) -> pz.SiteStream:
    return pz.SiteStream(url, storage_options={"endpoint": proxy.endpoint}, concurrency=8, **kwargs)


def ids(samples) -> list[str]:
    return [meta["site_id"] for _, meta in samples]


def storage_order(s: pz.SiteStream) -> list[str]:
    return s.dataset.table["site_id"].tolist()


def check_pixels(samples, written: dict[str, np.ndarray]) -> None:
    for pixels, meta in samples:
        rel = f"{meta['experiment']}/Plate{meta['plate']}/{meta['well']}_s{meta['site']}_w"
        assert pixels.shape == (6, 128, 128) and pixels.dtype == np.uint8
        for c in range(6):
            assert np.array_equal(pixels[c], written[f"{rel}{c + 1}.png"]), rel


def test_an_epoch_is_every_site_once_in_a_fresh_permutation(store, proxy, source) -> None:
    s = stream(store, proxy)
    samples = list(s)
    assert len(s) == len(samples) == SITES
    assert sorted(ids(samples)) == sorted(storage_order(s)) and ids(samples) != storage_order(s)
    check_pixels(samples, source[1])
    ds = pz.SiteDataset(store, storage_options={"endpoint": proxy.endpoint})
    by_id = {meta["site_id"]: (pixels, meta) for pixels, meta in (ds[i] for i in range(len(ds)))}
    for pixels, meta in samples:  # exactly what SiteDataset[i] gives
        assert meta == by_id[meta["site_id"]][1] and np.array_equal(pixels, by_id[meta["site_id"]][0])


def test_normalize_and_crop_as_site_dataset_does(store, proxy) -> None:
    s = stream(store, proxy, seed=2, channels=["w1", "w3"], normalize="plate", crop=48)
    ds = pz.SiteDataset(store, channels=["w1", "w3"], storage_options={"endpoint": proxy.endpoint},
                        normalize="plate", crop=48, seed=2)
    expected = {meta["site_id"]: pixels for pixels, meta in (ds[i] for i in range(len(ds)))}
    samples = list(s)
    assert len(samples) == SITES
    for pixels, meta in samples:
        assert pixels.shape == (2, 48, 48) and pixels.dtype == np.float32
        assert np.array_equal(pixels, expected[meta["site_id"]])


def test_one_request_per_site_with_many_in_flight(s3, store, proxy) -> None:
    s = stream(store, proxy)  # reads the 16 shard indexes
    s3.requests.clear()
    proxy.reset_counts()
    assert len(list(s)) == SITES
    counts = proxy.counts()
    assert s3.count() == s3.count("GET") == counts["requests"] == SITES
    assert 2 <= counts["max_in_flight"] <= 8, counts


def test_order_is_fixed_by_seed_and_epoch(store, proxy) -> None:
    a, b = stream(store, proxy, seed=3), stream(store, proxy, seed=3)
    first = ids(a)
    assert ids(b) == first
    a.set_epoch(1)
    second = ids(a)
    assert second != first and sorted(second) == sorted(first)
    b.set_epoch(1)
    assert ids(b) == second
    assert ids(stream(store, proxy, seed=4)) != first
    unshuffled = stream(store, proxy, shuffle=False)
    assert ids(unshuffled) == storage_order(unshuffled)


def test_ranks_split_an_epoch_disjoint_and_complete(store, proxy) -> None:
    streams = [stream(store, proxy, seed=5, rank=r, world_size=3) for r in range(3)]
    for s in streams:
        s.set_epoch(4)
    parts = [ids(s) for s in streams]
    assert [len(s) for s in streams] == [len(p) for p in parts] == [11, 11, 10]
    assert sorted(sum(parts, [])) == sorted(storage_order(streams[0]))
    with pytest.raises(OptionError, match="rank"):
        stream(store, proxy, rank=3, world_size=3)


def test_resume_mid_epoch_from_state_dict(store, proxy) -> None:
    full = stream(store, proxy, seed=7)
    full.set_epoch(2)
    expected = ids(full)
    s = stream(store, proxy, seed=7)
    s.set_epoch(2)
    samples = iter(s)
    head = [next(samples)[1]["site_id"] for _ in range(10)]
    state = s.state_dict()
    samples.close()
    assert state["consumed"] == 10 and state["epoch"] == 2
    resumed = stream(store, proxy, seed=7)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # as a training loop does at the top of every epoch: keeps the resumed position
    assert head + ids(resumed) == expected
    resumed.set_epoch(3)
    assert len(ids(resumed)) == SITES
    with pytest.raises(OptionError, match="seed 7 there, 8 here"):
        stream(store, proxy, seed=8).load_state_dict(state)


def test_a_missing_shard_raises_with_the_site_or_is_skipped(s3, source, proxy) -> None:
    url = convert(s3, source[0], "missing")
    boto3.client("s3", endpoint_url=s3.endpoint).delete_object(Bucket="stream", Key="missing.zarr/HUVEC-01/Plate1/images/c.1.0.0.0.0")
    with pytest.raises(StoreError, match=r"site HUVEC-01/Plate1/B03/[12]: .*B03 has no shard"):
        list(stream(url, proxy, shuffle=False))
    s = stream(url, proxy, on_error="skip")
    samples = list(s)
    assert len(samples) == SITES - 2 and s.skipped == 2
    assert not any(m["well"] == "B03" and m["experiment"] == "HUVEC-01" and m["plate"] == 1 for _, m in samples)
    check_pixels(samples, source[1])


def test_a_corrupt_chunk_raises_with_the_site_or_is_skipped(s3, source, proxy) -> None:
    url = convert(s3, source[0], "corrupt")
    client, key = boto3.client("s3", endpoint_url=s3.endpoint), "corrupt.zarr/HUVEC-02/Plate2/images/c.2.0.0.0.0"
    shard = bytearray(client.get_object(Bucket="stream", Key=key)["Body"].read())
    shard[100] ^= 0xFF  # inside the first chunk of the shard: site 1 of well C02
    client.put_object(Bucket="stream", Key=key, Body=bytes(shard))
    with pytest.raises(StoreError, match=r"site HUVEC-02/Plate2/C02/1: .*checksum mismatch"):
        list(stream(url, proxy))
    s = stream(url, proxy, on_error="skip")
    samples = list(s)
    assert len(samples) == SITES - 1 and s.skipped == 1
    check_pixels(samples, source[1])


def test_a_bucket_that_stops_answering_raises_after_the_retries(s3, store) -> None:
    proxy = LatencyProxy(s3.endpoint, latency=0.003).start()
    try:
        options = {"endpoint": proxy.endpoint, "client_options": {"timeout": "1s"}, "retry_config": {"max_retries": 1}}
        s = pz.SiteStream(store, storage_options=options, concurrency=4)
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(BucketError, match=r"stream/store.zarr/HUVEC-0\d/Plate\d/images/c.*gave up after 2 attempts"):
            next(iter(s))
        assert time.monotonic() - started < 10
    finally:
        proxy.stall(False)
        proxy.stop()


def test_works_without_torch(s3, store, proxy) -> None:
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "import converters as pz\n"
            f"s = pz.SiteStream({store!r}, storage_options={{'endpoint': {proxy.endpoint!r}}}, rank=1, world_size=2)\n"
            "print(len(s), len(list(s)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["16", "16"]


def collate(batch: list) -> tuple[list[str], np.ndarray, list[dict]]:
    return [meta["site_id"] for _, meta in batch], np.stack([p for p, _ in batch]), [meta for _, meta in batch]


def as_list(batch: list) -> list:
    return batch


def loader(s: pz.SiteStream, method: str = "fork"):
    torch = pytest.importorskip("torch")
    return torch.utils.data.DataLoader(s, batch_size=4, num_workers=2, multiprocessing_context=method, collate_fn=collate)


def test_data_loader_workers_split_each_rank_in_permutation_order(store, proxy, source) -> None:
    seen = []
    for rank in range(2):
        s = stream(store, proxy, seed=1, rank=rank, world_size=2, batch_size=4)
        s.set_epoch(1)
        batches = list(loader(s))
        got = [i for names, _, _ in batches for i in names]
        assert got == [storage_order(s)[j] for j in s.order()]  # two workers, and still the rank's permutation
        assert len(loader(s)) == 4 and len(got) == len(s) == 16
        check_pixels([(p, m) for _, pixels, metas in batches for p, m in zip(pixels, metas)], source[1])
        seen += got
    assert sorted(seen) == sorted(storage_order(s))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_data_loader_resumes_from_state_dict(store, proxy, method: str) -> None:
    s = stream(store, proxy, seed=1, rank=1, world_size=2, batch_size=4)
    s.set_epoch(1)
    batches = iter(loader(s, method))
    head = [i for _ in range(3) for i in next(batches)[0]]
    state = s.state_dict(consumed=12)
    del batches
    resumed = stream(store, proxy, seed=1, rank=1, world_size=2, batch_size=4)
    resumed.load_state_dict(state)
    tail = [i for names, _, _ in loader(resumed, method) for i in names]
    assert len(tail) == 4 and head + tail == [storage_order(s)[j] for j in s.order()]


def _rank_ids(rank: int, port: int, store: str, endpoint: str, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    s = pz.SiteStream(store, storage_options={"endpoint": endpoint})
    out.put((rank, s.rank, s.world_size, ids(s)))
    dist.destroy_process_group()


def test_rank_and_world_size_come_from_torch_distributed(store, proxy) -> None:
    pytest.importorskip("torch")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [context.Process(target=_rank_ids, args=(r, port, store, proxy.endpoint, out)) for r in range(2)]
    for p in processes:
        p.start()
    results = sorted(out.get(timeout=120) for _ in processes)
    for p in processes:
        p.join(timeout=30)
    assert [(r, rank, world) for r, rank, world, _ in results] == [(0, 0, 2), (1, 1, 2)]
    first, second = results[0][3], results[1][3]
    assert len(first) == len(second) == 16 and not set(first) & set(second)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_site_dataset_reads_a_loader_batch_with_reads_in_flight(store, proxy, source, method: str) -> None:
    """torch's DataLoader asks `SiteDataset.__getitems__` for a batch: one worker keeps several reads going (one at a
    time without it), and the batch comes back in the sampler's order with every pixel exact."""
    torch = pytest.importorskip("torch")
    ds = pz.SiteDataset(store, storage_options={"endpoint": proxy.endpoint}, concurrency=4)
    proxy.reset_counts()
    order = list(torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)))
    loaded = torch.utils.data.DataLoader(ds, batch_size=8, sampler=order, num_workers=1,
                                         multiprocessing_context=method, collate_fn=as_list)
    samples = [sample for batch in loaded for sample in batch]
    assert [meta["site_id"] for _, meta in samples] == [ds.table["site_id"][int(i)] for i in order]
    check_pixels(samples, source[1])
    counts = proxy.counts()
    assert counts["requests"] >= SITES and 2 <= counts["max_in_flight"] <= 4, counts


def test_credentials_and_region_in_storage_options_reach_every_read(store, proxy, monkeypatch) -> None:
    """obstore's names for credentials (any case, `aws_` prefixed or not), with none in the environment: the index is
    opened through s3fs and sites read through converters/s3reads.py, each told in its own words."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    options = {"endpoint": proxy.endpoint, "AWS_ACCESS_KEY_ID": "testing", "secret_access_key": "testing",
               "region": "us-east-1", "request_payer": True}
    ds = pz.SiteDataset(store, storage_options=options)
    assert ds.reader is not None and ds.reader._reads().s3.credentials.access_key == "testing"
    assert len(ds) == SITES and ds[3][0].shape == (6, 128, 128)
    with pytest.raises(BucketError, match=r"do not take the storage option\(s\) role_arn"):
        pz.SiteDataset(store, storage_options=options | {"role_arn": "arn:aws:iam::1:role/r"})
