"""URL checks for caller-supplied targets, and webhook signatures.

Only literal addresses are used, so no lookup or connection leaves the machine.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from funart_runtime.errors import URLNotAllowedError
from funart_runtime.urlguard import check_url
from funart_runtime.webhook import sign


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x", "http://127.8.9.1:8080/x", "http://[::1]/x", "http://10.0.0.1/x",
        "http://172.16.5.4/x", "http://192.168.1.1/x", "http://169.254.169.254/latest/meta-data",
        "http://100.100.100.200/latest", "http://0.0.0.0/x", "http://[fe80::1]/x",
        "http://[::ffff:127.0.0.1]/x",
    ],
)
def test_private_addresses_rejected(url: str) -> None:
    with pytest.raises(URLNotAllowedError) as caught:
        check_url(url, allow_private=False)

    assert caught.value.details["url"] == url
    assert "FUNART_ALLOW_PRIVATE_URLS" in caught.value.message


@pytest.mark.parametrize("url", ["ftp://1.1.1.1/x", "file:///etc/passwd", "http:///x", "not a url"])
def test_bad_schemes_rejected_even_when_private_allowed(url: str) -> None:
    with pytest.raises(URLNotAllowedError):
        check_url(url, allow_private=True)


def test_public_literal_accepted() -> None:
    check_url("https://8.8.8.8/hook", allow_private=False)


def test_private_allowed_by_setting() -> None:
    check_url("http://127.0.0.1:9000/hook", allow_private=True)


def test_signature_is_hmac_sha256() -> None:
    body = b'{"a": 1}'

    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()

    assert sign(body, "k") == f"sha256={expected}"
