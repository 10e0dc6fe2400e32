"""The cluster under constant load: rolling restarts, crashes, logout, a PostgreSQL restart.

The tests share one topology (``topology.py``): each starts again what the one before it
killed (``Cluster.restore``) and loads it with accounts of its own. Each reports its counts
as pytest properties (``--junitxml`` keeps them) and in its log line. Timing is measured
and reported, never asserted: the machine may be saturated.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from email.utils import parseaddr

import httpx
import pytest
import pytest_asyncio

from loopwise_bench.sim import SimConfig
from tests.cluster.load import Account, constant_load, register_accounts
from tests.cluster.topology import LOYALTY_CONCURRENCY, Cluster, running_cluster

pytestmark = [
    pytest.mark.xdist_group("cluster"),
    pytest.mark.blocks_loop,
    pytest.mark.timeout(600),
    pytest.mark.asyncio(loop_scope="module"),
]

RecordProperty = Callable[[str, object], None]


_ACCOUNT_SETS = itertools.count(1)
# Each round registers a user (a password hash) and reads on every instance: five give
# ten propagation delays, enough for the report's median and maximum.
_LOGOUT_ROUNDS = 5


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def topology() -> AsyncIterator[Cluster]:
    """One topology for the module: starting it costs more than most tests here take."""
    async with running_cluster() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def cluster(topology: Cluster) -> Cluster:
    """The topology whole again: what an earlier test killed runs, its knobs are reset."""
    await topology.restore()
    return topology


@pytest_asyncio.fixture(loop_scope="module")
async def accounts(cluster: Cluster) -> list[Account]:
    """Users of this test's own to load the cluster with, registered through HAProxy."""
    prefix = f"load{next(_ACCOUNT_SETS)}-"
    accounts = await register_accounts(cluster.haproxy.url, 8, prefix)
    # The load places orders, which verified addresses alone may; the verification link
    # itself is proven in tests/service/accounts/test_verification.py.
    await cluster.query(
        "UPDATE users SET email_verified_at = now() WHERE starts_with(email, $1)", prefix
    )
    return accounts


def _report(record: RecordProperty, name: str, **figures: object) -> None:
    for key, value in figures.items():
        record(key, value)
    print(f"\n[cluster] {name}: " + " ".join(f"{k}={v}" for k, v in figures.items()))  # noqa: T201  # the counts are the test's report


async def test_rolling_restart_fails_no_request(
    cluster: Cluster, accounts: list[Account], record_property: RecordProperty
) -> None:
    """Restarting all three API instances one at a time under load: 0 failed requests."""
    starts = [api.starts for api in cluster.apis]
    async with constant_load(cluster.haproxy.url, accounts) as load:
        for index, api in enumerate(cluster.apis, 1):
            before = api.pid
            await api.restart()  # SIGTERM: drain, stop, then start again
            assert api.pid != before
            await cluster.wait_for_haproxy(f"api{index}", "UP")
    _report(record_property, "rolling restart", **load.counts, total=load.requests)
    assert load.requests > 0
    assert load.failed == 0, load.summary()
    assert [api.starts - 1 for api in cluster.apis] == starts


async def test_sigkill_of_an_instance(
    cluster: Cluster, accounts: list[Account], record_property: RecordProperty
) -> None:
    """SIGKILL: failures bounded by its in-flight requests; every 201'd order exists."""
    victim = cluster.apis[1]
    async with constant_load(cluster.haproxy.url, accounts, lanes=8) as load:
        await asyncio.sleep(1)  # let it take its share of the load
        killed_at = time.monotonic()
        await victim.stop(signal.SIGKILL)
        await cluster.wait_for_haproxy("api2", "DOWN")
        detected = time.monotonic() - killed_at
        sessions_when_down = int((await cluster.server_states())["api2"]["stot"])
        # Keep the load on, then check nothing more was routed to the dead instance.
        await load.served(200)
    sessions_at_end = int((await cluster.server_states())["api2"]["stot"])
    ids = [row["id"] for row in await cluster.query("SELECT id FROM orders")]
    missing = set(load.orders) - set(ids)
    _report(
        record_property,
        "SIGKILL of one instance",
        **load.counts,
        total=load.requests,
        orders_201=len(load.orders),
        orders_missing=len(missing),
        down_detected_after_s=round(detected, 2),
        api2_sessions_after_down=sessions_at_end - sessions_when_down,
    )
    # At most one request per lane can have been in flight on the victim when it died.
    assert load.failed <= 8, load.summary()
    assert not missing
    assert sessions_at_end == sessions_when_down  # no request routed to it once DOWN


async def test_sigkill_of_a_worker_mid_send(
    cluster: Cluster, accounts: list[Account], record_property: RecordProperty
) -> None:
    """SIGKILL of the worker sending an email: every welcome email arrives, via the other."""
    release = asyncio.Event()
    stalled: list[str] = []
    stalling = asyncio.Event()

    async def stall_first(message: EmailMessage) -> str | None:
        # The first message of the batch is held mid-DATA until its worker is dead.
        recipient = parseaddr(str(message["To"]))[1]
        if recipient.startswith("mail") and not stalled:
            stalled.append(recipient)
            stalling.set()
            await release.wait()
            return "451 4.3.0 aborted: sender went away"
        return None

    cluster.smtp.on_data = stall_first
    async with constant_load(cluster.haproxy.url, accounts):
        registering = asyncio.create_task(register_accounts(cluster.haproxy.url, 20, "mail"))
        async with asyncio.timeout(60):
            await stalling.wait()
        # The stalled send's job, not any other running now (the load's accounts' welcomes).
        owner = (
            await cluster.query(
                "SELECT j.lease_owner FROM jobs j JOIN users u ON u.id = j.user_id"
                " WHERE j.state = 'running' AND u.email = $1",
                stalled[0],
            )
        )[0]["lease_owner"]
        pid = int(owner.split(":")[1])
        victim = next(w for w in cluster.workers if w.pid == pid)
        await victim.stop(signal.SIGKILL)
        release.set()
        registered = await registering
    wanted = {f"{a.email}" for a in registered} | {a.email for a in accounts}
    delivered: dict[str, int] = {}
    async with asyncio.timeout(120):
        while not wanted <= delivered.keys():
            message = await cluster.smtp.inbox.get()
            address = parseaddr(str(message["To"]))[1]
            delivered[address] = delivered.get(address, 0) + 1
    survivor = next(w for w in cluster.workers if w is not victim)
    _report(
        record_property,
        "SIGKILL of a worker mid-send",
        registered=len(wanted),
        delivered=len(delivered),
        duplicates=sum(n - 1 for n in delivered.values()),
        killed=victim.name,
    )
    assert survivor.running
    assert wanted <= delivered.keys()


async def test_logout_is_refused_on_every_instance(
    cluster: Cluster, accounts: list[Account], record_property: RecordProperty
) -> None:
    """Logout on one instance: the token is refused on the other two, measured per round."""
    one, *others = cluster.apis
    delays: list[float] = []
    async with constant_load(cluster.haproxy.url, accounts), httpx.AsyncClient(timeout=10) as c:
        for round_ in range(_LOGOUT_ROUNDS):
            (token_holder,) = await register_accounts(one.url, 1, f"logout{round_}-")
            auth = token_holder.headers
            # Warm each instance's session cache: the stale entry is what must go.
            for api in cluster.apis:
                for _ in range(2):
                    assert (await c.get(f"{api.url}/users/me", headers=auth)).status_code == 200
            assert (await c.post(f"{one.url}/logout", headers=auth)).status_code == 204
            logged_out = time.monotonic()
            assert (await c.get(f"{one.url}/users/me", headers=auth)).status_code == 401
            for api in others:
                async with asyncio.timeout(30):
                    # Polling another process: the refusal is the only signal it gives.
                    while True:
                        if (await c.get(f"{api.url}/users/me", headers=auth)).status_code == 401:
                            break
                        await asyncio.sleep(0.001)
                delays.append(time.monotonic() - logged_out)
    _report(
        record_property,
        "logout propagation",
        rounds=_LOGOUT_ROUNDS,
        checks=len(delays),
        max_ms=round(max(delays) * 1000, 1),
        median_ms=round(sorted(delays)[len(delays) // 2] * 1000, 1),
    )
    assert len(delays) == _LOGOUT_ROUNDS * len(others)


async def test_postgres_restart_under_the_cluster(
    cluster: Cluster, accounts: list[Account], record_property: RecordProperty
) -> None:
    """PostgreSQL restarts: 503s carry Retry-After, nothing is restarted by hand, all recover."""
    pids = [api.pid for api in cluster.apis] + [w.pid for w in cluster.workers]
    restarts = cluster.pg.restarts
    async with constant_load(cluster.haproxy.url, accounts) as load:
        began = time.monotonic()
        await cluster.pg.restart()
        back = time.monotonic()
        await cluster.wait_all_up(within=120)
        for api in cluster.apis:
            await api.wait_ready(within=120)
        healthy = time.monotonic()
        # The cluster serves again through HAProxy.
        await load.served(50)
    errors: Counter[str] = Counter()
    for api in cluster.apis:
        errors.update(await api.error_kinds())
    _report(
        record_property,
        "PostgreSQL restart",
        **load.counts,
        total=load.requests,
        **{k.replace(" ", "_"): v for k, v in load.unavailable.items()},
        postgres_down_s=round(back - began, 2),
        all_healthy_after_back_s=round(healthy - back, 2),
        unhandled=dict(errors),
    )
    assert cluster.pg.restarts == restarts + 1
    assert [api.pid for api in cluster.apis] + [w.pid for w in cluster.workers] == pids
    assert all(api.running for api in cluster.apis)
    assert load.unavailable["without Retry-After"] == 0, load.summary()
    # Everything that was not a success was a 503 that told the client when to retry.
    assert load.failed == load.counts["503"], (load.summary(), dict(errors))


async def test_a_downstream_limit_holds_across_the_instances(
    cluster: Cluster, accounts: list[Account], record_property: RecordProperty
) -> None:
    """Overviews on all three instances at once: loyalty sees the shared limit, not 3 times it."""
    # 24 calls, 4 at a time, 50 ms each: 0.3 s, well inside the overview's deadline, so
    # no call is cut off mid-flight (its slot would free while loyalty still works on it).
    cluster.loyalty.config = SimConfig(latency_ms=50)
    async with httpx.AsyncClient(timeout=30) as client:

        async def overview(account: Account) -> int:
            response = await client.get(
                f"{cluster.haproxy.url}/users/me/overview", headers=account.headers
            )
            return response.status_code

        statuses = await asyncio.gather(*(overview(a) for a in accounts * 3))
        metrics = [(await client.get(f"{api.url}/metrics")).text for api in cluster.apis]
    _report(
        record_property,
        "shared downstream limit",
        overviews=len(statuses),
        loyalty_calls=cluster.loyalty.requests,
        loyalty_max_in_flight=cluster.loyalty.max_in_flight,
        limit=LOYALTY_CONCURRENCY,
    )
    assert set(statuses) == {200}  # a call refused by the limit degrades, never fails
    assert cluster.loyalty.max_in_flight <= LOYALTY_CONCURRENCY
    assert all("loopwise_downstream_shared_in_use{" in text for text in metrics)
