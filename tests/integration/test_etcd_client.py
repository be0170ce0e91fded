"""lbsync's etcd client against a real etcd: keys through base64, compare-and-swap, leases,
watches in order, compaction, a crash and a restart, a hung server, failover, auth with
expiring tokens, and mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.etcd import EtcdServer, b64, make_tls_files
from support.ports import free_port
from support.waiting import async_wait_until

from lbsync.config import TlsFiles
from lbsync.kv.etcd import (
    Compacted,
    EtcdAuthError,
    EtcdClient,
    EtcdUnavailable,
    EventType,
    LeaseExpired,
    PermissionDenied,
    WatchIdle,
    WatchResponse,
)

PROGRESS_EVERY = ("--experimental-watch-progress-notify-interval", "300ms")
USER, PASSWORD = "lbsync", "lbsync-secret"

# Longer than the timeouts under test (1 s), shorter than the hangs they prevent (5 s and more).
HANG_DEADLINE = 4.0


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the tests that leave it running; each test keeps to its own prefix."""
    server = EtcdServer(root=tmp_path_factory.mktemp("etcd"), extra_args=PROGRESS_EVERY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd this test may kill, freeze and restart (default progress interval: 10 min)."""
    server = EtcdServer(root=tmp_path / "etcd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def etcd_auth_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """Auth on, tokens expiring after 2 s unused; `lbsync` may use `lbsync/` only."""
    server = EtcdServer(root=tmp_path / "etcd", extra_args=("--auth-token-ttl", "2"))
    server.start()
    server.enable_auth(USER, PASSWORD, "lbsync/")
    yield server
    server.stop()


@pytest.fixture
def etcd_tls_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """TLS with the test CA, and a client certificate required."""
    server = EtcdServer(root=tmp_path / "etcd", tls=make_tls_files(tmp_path / "tls"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(etcd_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    async with EtcdClient([etcd_server.url], request_timeout=3) as etcd:
        yield etcd


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of the test's own on the shared server."""
    return f"lbsync/test/{request.node.name}/"


async def take(watch: AsyncIterator[WatchResponse], events: int, timeout: float = 5) -> list[str]:
    """`TYPE key@revision` for the next `events` events (progress notifications skipped)."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        async for response in watch:
            seen += [f"{e.type} {e.kv.key}@{e.kv.mod_revision}" for e in response.events]
            if len(seen) >= events:
                return seen
    raise AssertionError(f"the watch ended after {seen}")


async def test_keys_and_values_round_trip_through_base64_and_prefixes_are_exact(
    client: EtcdClient, prefix: str
) -> None:
    binary = bytes(range(256)) + b"\n\x00"
    first = await client.put(prefix + "text", "grüße {json}")
    second = await client.put(prefix + "bin/ärger", binary)
    await client.put(prefix[:-1] + "0", "a sibling just past the prefix")
    await client.put(prefix + "text", "again")

    revision, kvs = await client.range_prefix(prefix)
    assert [kv.key for kv in kvs] == [prefix + "bin/ärger", prefix + "text"]
    assert revision == second + 2
    binary_kv, text_kv = kvs
    assert binary_kv.value == binary and binary_kv.lease == 0
    assert (binary_kv.create_revision, binary_kv.mod_revision, binary_kv.version) == (
        second,
        second,
        1,
    )
    assert text_kv.text == "again"
    assert (text_kv.create_revision, text_kv.mod_revision, text_kv.version) == (first, revision, 2)

    assert await client.get(prefix + "missing") is None
    assert await client.delete(prefix + "text") == 1
    assert await client.delete(prefix + "text") == 0
    assert await client.delete_prefix(prefix) == 1
    empty_revision, empty = await client.range_prefix(prefix)
    assert empty == [] and empty_revision > revision
    assert await client.get(prefix[:-1] + "0") is not None


async def test_a_1_mib_value_passes_put_get_and_the_watch(client: EtcdClient, prefix: str) -> None:
    value = os.urandom(1 << 20)
    revision, _ = await client.range_prefix(prefix)
    async with client.watch(prefix, revision + 1) as watch:
        written = await client.put(prefix + "big", value)
        async with asyncio.timeout(5):
            response = await anext(watch)
            while not response.events:  # a progress notification may come first
                response = await anext(watch)
    (event,) = response.events
    assert event.type is EventType.PUT and event.kv.mod_revision == written
    assert event.kv.value == value
    stored = await client.get(prefix + "big")
    assert stored is not None and stored.value == value


async def test_compare_and_swap_lets_exactly_one_of_two_writers_win(
    client: EtcdClient, prefix: str
) -> None:
    key = prefix + "split"
    assert (await client.txn_put_if(key, "v0", expect_mod_revision=0))[0] is True
    assert (await client.txn_put_if(key, "again", expect_mod_revision=0))[0] is False
    current = await client.get(key)
    assert current is not None

    results = await asyncio.gather(
        client.txn_put_if(key, "writer-a", expect_mod_revision=current.mod_revision),
        client.txn_put_if(key, "writer-b", expect_mod_revision=current.mod_revision),
    )
    assert sorted(won for won, _ in results) == [False, True]
    winner = "writer-a" if results[0][0] else "writer-b"
    stored = await client.get(key)
    assert stored is not None and stored.text == winner
    assert stored.mod_revision == max(revision for _, revision in results)


async def test_a_leased_key_vanishes_when_its_lease_is_revoked(
    client: EtcdClient, prefix: str
) -> None:
    lease = await client.grant(30)
    await client.put(prefix + "instance", "up", lease=lease)
    stored = await client.get(prefix + "instance")
    assert stored is not None and stored.lease == lease
    assert await client.keepalive_once(lease) > 0

    await client.revoke(lease)
    assert await client.get(prefix + "instance") is None
    with pytest.raises(LeaseExpired):
        await client.keepalive_once(lease)
    with pytest.raises(LeaseExpired):
        await client.put(prefix + "instance", "again", lease=lease)
    await client.revoke(lease)  # already gone: not an error


async def test_a_lease_expires_without_renewal_and_lives_on_with_keep_alive(
    client: EtcdClient, prefix: str
) -> None:
    ttl = 2  # etcd's minimum with its default heartbeat
    left_alone, renewed = await client.grant(ttl), await client.grant(ttl)
    await client.put(prefix + "left-alone", "x", lease=left_alone)
    await client.put(prefix + "renewed", "x", lease=renewed)
    keeper = asyncio.create_task(client.keep_alive(renewed, ttl))
    try:

        async def left_alone_is_gone() -> bool:
            return await client.get(prefix + "left-alone") is None

        await async_wait_until(left_alone_is_gone, 10, "the unrenewed lease to expire")
        # Both leases began together with the same TTL: only renewal kept this one.
        assert await client.get(prefix + "renewed") is not None
        assert await client.keepalive_once(renewed) > 0
        assert not keeper.done()
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    await client.revoke(renewed)


async def test_a_watch_sees_puts_and_deletes_in_order_with_their_revisions(
    client: EtcdClient, prefix: str
) -> None:
    revision, _ = await client.range_prefix(prefix)
    async with client.watch(prefix, revision + 1) as watch:
        a1 = await client.put(prefix + "a", "1")
        await client.put("lbsync/elsewhere", "not watched")
        b1 = await client.put(prefix + "b", "1")
        a2 = await client.put(prefix + "a", "2")
        await client.delete(prefix + "a")
        deleted, _ = await client.range_prefix(prefix)
        await client.delete_prefix(prefix)
        gone, _ = await client.range_prefix(prefix)
        seen = await take(watch, 5)
        assert watch.resume_revision == gone + 1
    assert seen == [
        f"PUT {prefix}a@{a1}",
        f"PUT {prefix}b@{b1}",
        f"PUT {prefix}a@{a2}",
        f"DELETE {prefix}a@{deleted}",
        f"DELETE {prefix}b@{gone}",
    ]


async def test_a_watch_from_a_compacted_revision_raises_compacted(
    client: EtcdClient, prefix: str
) -> None:
    early = await client.put(prefix + "k", "1")
    late = await client.put(prefix + "k", "2")
    await client.compact(late)
    with pytest.raises(Compacted) as raised:
        async with client.watch(prefix, early) as watch, asyncio.timeout(5):
            await anext(watch)
    assert raised.value.compact_revision == late
    # The way back: read the prefix again and watch past that read.
    revision, kvs = await client.range_prefix(prefix)
    assert [kv.text for kv in kvs] == ["2"]
    async with client.watch(prefix, revision + 1) as watch:
        written = await client.put(prefix + "k", "3")
        assert await take(watch, 1) == [f"PUT {prefix}k@{written}"]


async def test_progress_notifications_keep_a_quiet_watch_alive_past_its_idle_timeout(
    client: EtcdClient, prefix: str
) -> None:
    revision, _ = await client.range_prefix(prefix)
    started = time.monotonic()
    progress: list[WatchResponse] = []
    async with client.watch(prefix, revision + 1, idle_timeout=1.0) as watch:
        async with asyncio.timeout(10):
            async for response in watch:
                assert response.is_progress_notify
                progress.append(response)
                if time.monotonic() - started > 2.0:
                    break
        assert watch.resume_revision == progress[-1].revision + 1
    assert len(progress) >= 3
    assert all(response.revision >= revision for response in progress)


async def test_a_hung_server_trips_the_watchdog_and_times_calls_out(own_etcd: EtcdServer) -> None:
    async with EtcdClient([own_etcd.url], request_timeout=1) as client:
        revision = await client.put("lbsync/k", "1")
        async with client.watch("lbsync/", revision + 1, idle_timeout=1.0) as watch:
            own_etcd.freeze()
            try:
                started = time.monotonic()
                with pytest.raises(WatchIdle):  # the watchdog, before this test's own deadline
                    async with asyncio.timeout(HANG_DEADLINE):
                        await anext(watch)
                assert time.monotonic() - started >= 0.9  # not before its idle timeout
                with pytest.raises(EtcdUnavailable):  # the request timeout, not a hang
                    async with asyncio.timeout(HANG_DEADLINE):
                        await client.get("lbsync/k")
            finally:
                own_etcd.thaw()
        async with client.watch("lbsync/", watch.resume_revision) as watch:
            written = await client.put("lbsync/k", "2")
            assert await take(watch, 1) == [f"PUT lbsync/k@{written}"]


async def test_a_killed_server_fails_calls_and_the_watch_at_once_and_a_restart_recovers(
    own_etcd: EtcdServer,
) -> None:
    async with EtcdClient([own_etcd.url], request_timeout=5) as client:
        revision = await client.put("lbsync/k", "before")
        async with client.watch("lbsync/", revision + 1) as watch:
            own_etcd.kill()
            # all three fail well before the 5 s request timeout: a refused connection, no hang
            async with asyncio.timeout(HANG_DEADLINE):
                with pytest.raises(EtcdUnavailable):
                    await anext(watch)
                with pytest.raises(EtcdUnavailable):
                    await client.get("lbsync/k")
                with pytest.raises(EtcdUnavailable):
                    await client.txn_put_if("lbsync/k", "x", expect_mod_revision=revision)

        own_etcd.start()
        stored = await client.get("lbsync/k")
        assert stored is not None and stored.text == "before"
        async with client.watch("lbsync/", revision + 1) as watch:
            written = await client.put("lbsync/k", "after")
            assert await take(watch, 1) == [f"PUT lbsync/k@{written}"]


async def test_failover_skips_a_dead_endpoint_and_remembers_the_live_one(
    etcd_server: EtcdServer, prefix: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient([dead, etcd_server.url], request_timeout=3) as client:
        assert client.endpoint == dead
        won, revision = await client.txn_put_if(prefix + "k", "v", expect_mod_revision=0)
        assert won
        assert client.endpoint == etcd_server.url
        async with client.watch(prefix, revision) as watch:
            assert await take(watch, 1) == [f"PUT {prefix}k@{revision}"]
    async with EtcdClient([dead, f"http://127.0.0.1:{free_port()}"]) as nowhere:
        with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
            await nowhere.get(prefix + "k")


async def test_wrong_or_missing_credentials_and_foreign_keys_are_auth_errors(
    etcd_auth_server: EtcdServer,
) -> None:
    url = etcd_auth_server.url
    async with EtcdClient([url], username=USER, password="wrong") as client:
        with pytest.raises(EtcdAuthError, match="authentication failed"):
            await client.get("lbsync/k")
    async with EtcdClient([url]) as anonymous:
        with pytest.raises(EtcdAuthError):
            await anonymous.get("lbsync/k")
    async with EtcdClient([url], username=USER, password=PASSWORD) as client:
        await client.put("lbsync/k", "mine")
        with pytest.raises(PermissionDenied):
            await client.put("other/k", "not mine")
        with pytest.raises(PermissionDenied):
            async with client.watch("other/"):
                pass


async def test_the_client_logs_in_again_when_its_token_expires(
    etcd_auth_server: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbsync.kv.etcd")
    async with EtcdClient([etcd_auth_server.url], username=USER, password=PASSWORD) as client:

        async def expiry_of(token: str | None) -> None:
            async def deleted() -> bool:
                return etcd_auth_server.log_has("deleted a simple token", f'"{token}"')

            # Watching etcd's log does not use the token, so it cannot prolong it.
            await async_wait_until(deleted, 10, f"etcd to expire token {token}")

        revision = await client.put("lbsync/k", "1")
        first = client.token
        await expiry_of(first)
        refused = etcd_auth_server.post_raw("/v3/kv/range", {"key": b64("lbsync/k")}, token=first)
        assert refused[0] == 401, refused
        stored = await client.get("lbsync/k")  # refused, logged in again, retried
        assert stored is not None and stored.mod_revision == revision
        assert client.token not in (None, first)
        assert "refused the auth token" in caplog.text

        await expiry_of(client.token)
        async with client.watch("lbsync/", revision + 1) as watch:  # same, for a watch
            written = await client.put("lbsync/k", "2")
            assert await take(watch, 1) == [f"PUT lbsync/k@{written}"]
        assert "refused the watch's auth token" in caplog.text


async def test_mutual_tls_with_the_test_ca_and_a_client_certificate(
    etcd_tls_server: EtcdServer,
) -> None:
    tls = etcd_tls_server.tls
    assert tls is not None and etcd_tls_server.url.startswith("https://")
    files = TlsFiles(ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key)
    async with EtcdClient([etcd_tls_server.url], tls=files) as client:
        revision = await client.put("lbsync/k", "secure")
        async with client.watch("lbsync/", revision) as watch:
            assert await take(watch, 1) == [f"PUT lbsync/k@{revision}"]
    async with EtcdClient([etcd_tls_server.url], tls=TlsFiles(ca_file=tls.ca)) as no_certificate:
        with pytest.raises(EtcdUnavailable):
            await no_certificate.get("lbsync/k")
    async with EtcdClient([etcd_tls_server.url]) as untrusting:
        with pytest.raises(EtcdUnavailable, match="certificate"):
            await untrusting.get("lbsync/k")
