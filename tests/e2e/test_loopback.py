"""MLflow itself is out of other machines' reach: on its Unix socket (the default) it has no TCP port at
all; on loopback TCP (--mlflow-port), its port is closed from this machine's other addresses."""

from __future__ import annotations

import ipaddress
import socket

import psutil
import pytest

from tests.app_process import AppProcess, free_port

pytestmark = pytest.mark.e2e


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


def test_mlflow_on_its_socket_listens_on_no_tcp_port(app):
    ports, sockets = app.mlflow_listening()
    assert sockets, "the MLflow child should listen on its Unix socket by default"
    assert ports == set()


@pytest.fixture(scope="module")
def app_on_tcp(tmp_path_factory):
    running = AppProcess(tmp_path_factory.mktemp("tcp-child"), "--mlflow-port", str(free_port())).start()
    try:
        yield running.wait_ready()
    finally:
        running.stop()


def test_mlflow_on_tcp_is_reachable_on_loopback_only(app_on_tcp):
    app = app_on_tcp
    ports, _ = app.mlflow_listening()
    assert ports, "the MLflow child should be listening"
    assert app.port not in ports
    addresses = other_addresses()
    if not addresses:
        pytest.skip("this host has no address besides loopback")
    for port in ports:
        assert connects(socket.AF_INET, "127.0.0.1", port), f"MLflow should answer on 127.0.0.1:{port}"
        reachable = [host for family, host in addresses if connects(family, host, port)]
        assert reachable == [], f"MLflow's port {port} is reachable on {reachable}"
