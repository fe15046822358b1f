"""Host and Origin rules of the front, table by table."""

from __future__ import annotations

import pytest

from proxy.edge.policy import EdgePolicy, OriginVerdict, normalise_authority, split_host

DEFAULT = EdgePolicy()


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("example.com", "example.com"),
        ("example.com:8000", "example.com"),
        ("Example.COM:80", "example.com"),
        ("  example.com:80 ", "example.com"),
        ("127.0.0.1:5000", "127.0.0.1"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("[FD00::1]:443", "[fd00::1]"),
        ("::1", "::1"),  # bare IPv6 (invalid as a Host, but not mistaken for name:port)
        ("[::1", "[::1"),  # unterminated bracket: left as it is
        ("", ""),
    ],
)
def test_split_host(host, name):
    assert split_host(host) == name


@pytest.mark.parametrize(
    ("scheme", "netloc", "authority"),
    [
        ("http", "example.com:80", "example.com"),
        ("https", "example.com:443", "example.com"),
        ("https", "Example.COM:443", "example.com"),
        ("http", "example.com", "example.com"),
        ("http", "example.com:443", "example.com:443"),  # 443 is not http's default
        ("https", "example.com:80", "example.com:80"),
        ("http", "example.com:8080", "example.com:8080"),
        ("https", "example.com:8443", "example.com:8443"),
        ("http", "[::1]:80", "[::1]"),
        ("http", "[::1]:8080", "[::1]:8080"),
        ("ftp", "example.com:21", "example.com:21"),  # no default known for other schemes
    ],
)
def test_normalise_authority(scheme, netloc, authority):
    assert normalise_authority(scheme, netloc) == authority


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:8000", True),
        ("[::1]", True),
        ("[::1]:8000", True),
        ("10.1.2.3:8000", True),
        ("192.168.0.10", True),
        ("172.16.0.1:80", True),
        ("172.31.255.255", True),
        ("172.15.0.1", False),
        ("172.32.0.1", False),
        ("[fd12:3456::1]:8000", True),
        ("[fc00::1]", True),
        ("[fe80::1]", False),
        ("myapp-1234567890.aws.databricksapps.com", True),
        ("MyApp-1.AWS.DatabricksApps.com:443", True),
        ("databricksapps.com", False),
        ("databricksapps.com.attacker.example", False),
        ("attacker-databricksapps.com", False),
        ("attacker.example", False),
        ("", False),
        ("localhost\r\nX-Injected: 1", False),
        ("localhost\n", False),
        ("localhost\r", False),
        ("localhost\x00.attacker.example", False),
        ("local host", False),
        ("localhost/path", False),
        # Values no browser can send, which a pattern match alone let through (issue 11, item 8).
        ("[fd00::1]evil.com", False),
        ("10.0.0.1:80@evil", False),
        ("evil.com#.databricksapps.com", False),
        ("a.databricksapps.com?.x", False),
        ("[fd00::zz]", False),
        ("localhost:99999", False),
        ("localhost:", False),
        ("localhost..", False),
    ],
)
def test_default_host_allowed(host, allowed):
    assert DEFAULT.host_allowed(host) is allowed


@pytest.mark.parametrize(
    ("patterns", "host", "allowed"),
    [
        (("mlflow.example.com",), "mlflow.example.com", True),
        (("mlflow.example.com",), "mlflow.example.com:8443", True),  # a name allows every port
        (("mlflow.example.com",), "MLFLOW.Example.com", True),
        (("MLflow.Example.com",), "mlflow.example.com", True),
        (("mlflow.example.com",), "localhost", False),  # configured hosts replace the defaults
        (("mlflow.example.com",), "other.example.com", False),
        (("mlflow.example.com:8443",), "mlflow.example.com:8443", True),
        (("mlflow.example.com:8443",), "mlflow.example.com:9000", False),
        (("mlflow.example.com:8443",), "mlflow.example.com", False),
        (("*.example.com",), "a.example.com", True),
        (("*.example.com",), "a.b.example.com:8000", True),
        (("*.example.com",), "example.com", False),
        (("[::1]",), "[::1]:5000", True),
        (("*",), "anything.example", True),
        (("*",), "bad\r\nhost", False),  # control characters are refused even with "*"
        (("*",), "", False),
    ],
)
def test_configured_host_allowed(patterns, host, allowed):
    assert EdgePolicy(allowed_hosts=patterns).host_allowed(host) is allowed


PUBLIC = "mlflow.example.com"


@pytest.mark.parametrize(
    ("origin", "public_host", "scheme", "verdict"),
    [
        (None, PUBLIC, "https", OriginVerdict.NONE),
        ("https://mlflow.example.com", PUBLIC, "https", OriginVerdict.SAME_ORIGIN),
        ("https://MLflow.Example.com", PUBLIC, "https", OriginVerdict.SAME_ORIGIN),
        ("https://mlflow.example.com:443", PUBLIC, "https", OriginVerdict.SAME_ORIGIN),
        ("https://mlflow.example.com", f"{PUBLIC}:443", "https", OriginVerdict.SAME_ORIGIN),
        ("http://mlflow.example.com:80", PUBLIC, "http", OriginVerdict.SAME_ORIGIN),
        ("http://mlflow.example.com:8000", f"{PUBLIC}:8000", "http", OriginVerdict.SAME_ORIGIN),
        (" https://mlflow.example.com ", PUBLIC, "https", OriginVerdict.SAME_ORIGIN),
        # TLS ends at the platform's proxy, which sends no X-Forwarded-Proto: the launcher gives
        # the front the public scheme (https) there.
        ("https://myapp.aws.databricksapps.com", "myapp.aws.databricksapps.com", "https", OriginVerdict.SAME_ORIGIN),
        # An origin is scheme, host and port.
        ("https://mlflow.example.com", PUBLIC, "http", OriginVerdict.FOREIGN),
        ("http://mlflow.example.com", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("https://mlflow.example.com", PUBLIC, "HTTPS", OriginVerdict.SAME_ORIGIN),
        ("https://mlflow.example.com:8443", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("http://mlflow.example.com", f"{PUBLIC}:8000", "http", OriginVerdict.FOREIGN),
        ("https://mlflow.example.com.attacker.example", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("https://attacker.example", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("null", PUBLIC, "https", OriginVerdict.FOREIGN),  # opaque origin: sandboxed frame, file://
        ("", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("file://", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("chrome-extension://abcdef", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("ftp://mlflow.example.com", PUBLIC, "https", OriginVerdict.FOREIGN),  # only web origins can match
        ("chrome-extension://localhost", PUBLIC, "https", OriginVerdict.FOREIGN),
        ("http://localhost:3000", PUBLIC, "https", OriginVerdict.ALLOWED),
        ("http://127.0.0.1:5000", PUBLIC, "https", OriginVerdict.ALLOWED),
        ("http://[::1]:5000", PUBLIC, "https", OriginVerdict.ALLOWED),
        ("http://localhost.attacker.example", PUBLIC, "https", OriginVerdict.FOREIGN),
    ],
)
def test_default_origin_verdict(origin, public_host, scheme, verdict):
    assert DEFAULT.origin_verdict(origin, public_host, scheme) is verdict


@pytest.mark.parametrize(
    ("allowed_origins", "origin", "verdict"),
    [
        (("https://notebooks.example.org",), "https://notebooks.example.org", OriginVerdict.ALLOWED),
        (("https://notebooks.example.org",), "https://notebooks.example.org.attacker.example", OriginVerdict.FOREIGN),
        (("https://notebooks.example.org",), "http://notebooks.example.org", OriginVerdict.FOREIGN),
        (("https://notebooks.example.org",), "https://notebooks.example.org:8443", OriginVerdict.FOREIGN),
        (("https://*.example.org",), "https://a.example.org", OriginVerdict.ALLOWED),
        (("https://*.example.org",), "https://a.b.example.org", OriginVerdict.ALLOWED),
        (("https://*.example.org",), "https://example.org", OriginVerdict.FOREIGN),
        (("https://*.example.org",), "http://a.example.org", OriginVerdict.FOREIGN),
        (("https://a.example.org", "https://b.example.org"), "https://b.example.org", OriginVerdict.ALLOWED),
        (("https://notebooks.example.org",), "null", OriginVerdict.FOREIGN),
    ],
)
def test_configured_origin_verdict(allowed_origins, origin, verdict):
    policy = EdgePolicy(allowed_origins=allowed_origins)
    assert policy.origin_verdict(origin, PUBLIC, "https") is verdict


@pytest.mark.parametrize("host", ["10.evil.example", "192.168.attacker.example:8000", "172.16.x.example", "fd00.example"])
def test_address_patterns_do_not_admit_host_names_that_start_with_digits(host):
    # A DNS-rebinding page can be served from a name like 10.evil.example; only real addresses match 10.*.
    assert not EdgePolicy().host_allowed(host)


@pytest.mark.parametrize("host", ["10.1.2.3", "10.1.2.3:8000", "192.168.0.7", "172.31.0.1:443", "[fd12::1]:8000"])
def test_address_patterns_admit_private_addresses(host):
    assert EdgePolicy().host_allowed(host)


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8000.attacker.example",  # urlsplit reads hostname 127.0.0.1 here
        "http://localhost:99999",
        "http://127.0.0.1@attacker.example",
        "http://attacker.example@127.0.0.1",
    ],
)
def test_malformed_origins_are_foreign_never_loopback(origin):
    assert DEFAULT.origin_verdict(origin, "127.0.0.1:8000", "http") is OriginVerdict.FOREIGN
