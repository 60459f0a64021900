"""Classifying, decoding and naming loader inputs; seeds; redirect checks."""

from __future__ import annotations

import base64
import http.server
import threading
from typing import Any

import pytest

from funart_runtime import fetch
from funart_runtime.errors import BadRequestError, URLNotAllowedError
from funart_runtime.inputs import (
    PendingInput,
    check_file_name,
    classify,
    decode_base64,
    extension_for,
    find_inputs,
    randomize_seeds,
    split_oss_url,
)

B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"x" * 60).decode()


@pytest.mark.parametrize(
    ("value", "kind"),
    [("https://h/x.png", "url"), ("HTTP://h/x", "url"), ("oss://b/k.png", "oss"),
     ("data:image/png;base64,AAAA", "data_uri"), (B64, "base64"), ("example.png", "file"),
     ("sub/dir/example.png [input]", "file"), ("x" * 80 + ".png", "file"), ("!" * 80, "base64")],
)
def test_classify(value: str, kind: str) -> None:
    assert classify(value) == kind


def test_find_inputs_only_upload_widgets() -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png", "upload": "image"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "https://not-an-input"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": ["9", 0]}},
    }

    found = find_inputs(workflow, lambda c: {"image"} if c == "LoadImage" else set())

    assert found == [PendingInput("1", "image", "file", "a.png")]


@pytest.mark.parametrize("value", ["../x.png", "/abs.png", "a/../../x.png", "C:\\x.png", "..\\x"])
def test_escaping_file_names(value: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        check_file_name(PendingInput("1", "image", "file", value))

    assert caught.value.code == "INVALID_INPUT_PATH"


@pytest.mark.parametrize("value", ["a.png", "sub/a.png", "a..b.png", "a.png [input]"])
def test_safe_file_names(value: str) -> None:
    check_file_name(PendingInput("1", "image", "file", value))


def test_decode_variants() -> None:
    payload = b"\x00\x01binary\xff"
    standard = base64.b64encode(payload).decode()
    urlsafe = base64.urlsafe_b64encode(payload).decode()

    assert decode_base64(PendingInput("1", "i", "base64", standard)) == (payload, "")
    assert decode_base64(PendingInput("1", "i", "base64", urlsafe)) == (payload, "")
    spaced = " \n".join([standard[:4], standard[4:]])
    assert decode_base64(PendingInput("1", "i", "base64", spaced))[0] == payload
    data_uri = "data:audio/wav;name=x.wav;base64," + standard
    assert decode_base64(PendingInput("1", "i", "data_uri", data_uri)) == (payload, "audio/wav")


@pytest.mark.parametrize(
    ("data", "content_type", "source", "extension"),
    [(b"\x89PNG\r\n\x1a\nrest", "", "", ".png"), (b"\xff\xd8\xff\xe0", "", "", ".jpg"),
     (b"RIFF\0\0\0\0WEBPVP8", "", "", ".webp"), (b"RIFF\0\0\0\0WAVEfmt", "", "", ".wav"),
     (b"fLaC", "", "", ".flac"), (b"\0\0\0\x18ftypmp42", "", "", ".mp4"),
     (b"??", "audio/mpeg", "", ".mp3"), (b"??", "", "https://h/a%20b/clip.MOV?x=1", ".mov"),
     (b"??", "", "https://h/noext", ".bin")],
)
def test_extension_for(data: bytes, content_type: str, source: str, extension: str) -> None:
    assert extension_for(data, content_type, source) == extension


def test_split_oss_url() -> None:
    assert split_oss_url("oss://bucket/dir/a b.png") == ("bucket", "dir/a b.png")
    with pytest.raises(BadRequestError):
        split_oss_url("oss://bucket/")


def test_seeds_randomized_and_reported() -> None:
    workflow = {
        "3": {"class_type": "KSampler", "inputs": {"seed": -1, "steps": 3}},
        "4": {"class_type": "KSamplerAdvanced", "inputs": {"noise_seed": -1}},
        "5": {"class_type": "KSampler", "inputs": {"seed": 7}},
    }

    chosen = randomize_seeds(workflow)

    assert set(chosen) == {"3", "4"}
    assert workflow["3"]["inputs"]["seed"] == chosen["3"]["seed"] >= 0
    assert workflow["4"]["inputs"]["noise_seed"] == chosen["4"]["noise_seed"] >= 0
    assert workflow["5"]["inputs"]["seed"] == 7


def test_redirect_target_checked_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    checked: list[str] = []
    real_check = fetch.check_url

    def check_loopback_allowed(url: str, *, allow_private: bool, what: str) -> None:
        checked.append(url)
        real_check(url, allow_private=url.startswith("http://127.0.0.1"), what=what)

    monkeypatch.setattr(fetch, "check_url", check_loopback_allowed)
    start = f"http://127.0.0.1:{server.server_address[1]}/start"

    with pytest.raises(URLNotAllowedError):
        fetch.download(start, allow_private=False, max_bytes=1000, timeout_s=5)

    assert checked == [start, "http://169.254.169.254/latest/meta-data"]
    server.server_close()
