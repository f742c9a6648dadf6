"""HEALTH_HOST: /healthz and /metrics reachable from another host (Prometheus, Kubernetes probes).

"Another host" is a network namespace joined to this one by a veth pair (testing/netpartition.py):
traffic never leaves this machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from testing import netpartition, run_cli, wait_until

FETCH = """
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status); print(r.read().decode())
except OSError as exc:
    print("refused", exc)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch_from(ns: netpartition.Namespace, url: str) -> tuple[str, str]:
    """GET url from inside the namespace: ("200", body), or ("refused", why)."""
    out = subprocess.run(
        [*ns.prefix, sys.executable, "-c", FETCH, url], capture_output=True, text=True, timeout=30
    ).stdout
    status, _, rest = out.partition("\n")
    return status.split()[0] if status else "", rest


@pytest.fixture
def namespace():
    why = netpartition.unavailable()
    if why:
        pytest.skip(f"no second network namespace for a remote client: {why}")
    ns = netpartition.Namespace()
    yield ns
    ns.close()


def test_health_host_0_0_0_0_answers_another_host_and_the_default_does_not(products, start_pool, namespace):
    ns = namespace
    # Default (127.0.0.1): the other host is refused, this host is answered.
    port = _free_port()
    local = start_pool("--workers", "1", extra_env={"HEALTH_PORT": str(port)})
    wait_until(lambda: '"health_started"' in local.output, timeout=20, message="the health server")
    assert '"url": "http://127.0.0.1:' in local.output.replace('"url":"', '"url": "')
    status, _ = _fetch_from(ns, f"http://{ns.host_ip}:{port}/healthz")
    assert status == "refused"
    assert local.stop() == 0

    # HEALTH_HOST=0.0.0.0: the other host gets /healthz (200, the real checks) and /metrics.
    port = _free_port()
    remote = start_pool("--workers", "2", extra_env={"HEALTH_PORT": str(port), "HEALTH_HOST": "0.0.0.0"})

    def healthy() -> dict | None:
        status, body = _fetch_from(ns, f"http://{ns.host_ip}:{port}/healthz")
        return json.loads(body) if status == "200" else None

    health = wait_until(healthy, timeout=30, interval=0.5, message="/healthz from the other host")
    assert health["status"] == "ok" and health["workers_alive"] == 2 and health["database"] == "ok"
    status, text = _fetch_from(ns, f"http://{ns.host_ip}:{port}/metrics")
    assert status == "200" and 'workerpool_workers{state="alive"} 2.0' in text
    assert remote.stop() == 0


def test_health_host_one_address_binds_only_that_address(products, start_pool, namespace):
    ns = namespace
    port = _free_port()
    pool = start_pool("--workers", "1", "--health-host", ns.host_ip, extra_env={"HEALTH_PORT": str(port)})
    wait_until(
        lambda: _fetch_from(ns, f"http://{ns.host_ip}:{port}/healthz")[0] == "200",
        timeout=30,
        interval=0.5,
        message="/healthz on the veth address",
    )
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert pool.stop() == 0


@pytest.mark.parametrize("value", ["localhost", "0.0.0.0:9464", "300.1.1.1", "any"])
def test_a_bad_health_host_exits_2_with_one_line(env, value):
    result = run_cli({**env, "HEALTH_PORT": str(_free_port()), "HEALTH_HOST": value}, "run", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "HEALTH_HOST=" in result.stderr and "IP address" in result.stderr
    assert "Traceback" not in result.stderr and env["ALGOLIA_ADMIN_KEY"] not in result.stderr


def test_a_health_host_that_is_not_on_this_machine_exits_2_with_one_line(env):
    # 192.0.2.0/24 is TEST-NET-1 (documentation only): no interface here has it; binding fails, nothing is sent.
    result = run_cli({**env, "HEALTH_PORT": str(_free_port()), "HEALTH_HOST": "192.0.2.7"}, "run", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "HEALTH_HOST=192.0.2.7" in result.stderr


def test_health_host_takes_an_ipv6_address(products, start_pool):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    port = _free_port()
    pool = start_pool("--workers", "1", extra_env={"HEALTH_PORT": str(port), "HEALTH_HOST": "::1"})

    def answer() -> bytes | None:
        try:
            with socket.create_connection(("::1", port), timeout=5) as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return conn.recv(65536)
        except OSError:
            return None

    reply = wait_until(answer, timeout=30, interval=0.2, message="/healthz on [::1]")
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert f'"url": "http://[::1]:{port}"' in pool.output.replace('"url":"', '"url": "')
    assert pool.stop() == 0
