"""MLflow itself listens on loopback only: from this machine's other addresses its port is closed."""

from __future__ import annotations

import ipaddress
import socket

import psutil
import pytest

pytestmark = pytest.mark.e2e


def mlflow_listening_ports(app) -> set[int]:
    """TCP ports the MLflow processes (not the front) are listening on."""
    ports = set()
    for pid in app.mlflow_pids():
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        ports.update(c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN)
    return ports


def other_addresses() -> list[tuple[int, str]]:
    """This host's addresses that are not loopback (IPv6 link-local left out: it needs a scope)."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(address.address.split("%")[0])
            if not ip.is_loopback and not ip.is_link_local:
                found.append((address.family, str(ip)))
    return found


def connects(family: int, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        try:
            sock.connect((host, port))
        except (ConnectionRefusedError, OSError):
            return False
        return True


def test_mlflow_is_reachable_on_loopback_only(app):
    ports = mlflow_listening_ports(app)
    assert ports, "the MLflow child should be listening"
    assert app.port not in ports
    addresses = other_addresses()
    if not addresses:
        pytest.skip("this host has no address besides loopback")
    for port in ports:
        assert connects(socket.AF_INET, "127.0.0.1", port), f"MLflow should answer on 127.0.0.1:{port}"
        reachable = [host for family, host in addresses if connects(family, host, port)]
        assert reachable == [], f"MLflow's port {port} is reachable on {reachable}"
