"""`funart call` helpers: workflow overrides and FC request signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from funart_runtime.caller import load_workflow, signature_headers
from funart_runtime.errors import BadRequestError
from funart_runtime.storage import Credentials


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    return path


def test_params_set_json_and_strings(tmp_path: Path) -> None:
    path = write(tmp_path, {"prompt": {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}})

    workflow = load_workflow(path, ["3.seed=42", "3.sampler_name=euler", "3.cfg=7.5",
                                    "3.text=a=b"])

    assert workflow["3"]["inputs"] == {"seed": 42, "sampler_name": "euler", "cfg": 7.5,
                                       "text": "a=b"}


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="Cannot read workflow"):
        load_workflow(tmp_path / "missing.json", [])


def canonical_signature(method: str, path: str, query: str, headers: dict[str, str],
                        secret: str) -> str:
    """ACS3-HMAC-SHA256 written out from Alibaba Cloud's published V3 signature steps."""
    signed = {k: v for k, v in headers.items() if k.startswith("x-acs-")}
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name].strip()}\n" for name in names)
    canonical = "\n".join([method, path, query, canonical_headers, ";".join(names),
                           headers["x-acs-content-sha256"]])
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def test_signature_matches_v3_steps() -> None:
    body = b'{"prompt": {}}'
    credentials = Credentials("AKID", "secret-value", "sts-token")

    headers = signature_headers("POST", "https://fc.example/api/serverless/run?stream=true",
                                body, credentials)

    assert headers["x-acs-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert headers["x-acs-security-token"] == "sts-token"
    expected = canonical_signature("POST", "/api/serverless/run", "stream=true", headers,
                                   "secret-value")
    assert headers["Authorization"] == (
        "ACS3-HMAC-SHA256 Credential=AKID,SignedHeaders=x-acs-content-sha256;x-acs-date;"
        f"x-acs-security-token;x-acs-signature-nonce,Signature={expected}"
    )


def test_signature_without_token() -> None:
    headers = signature_headers("GET", "http://h/x", b"", Credentials("A", "B"))

    assert "x-acs-security-token" not in headers
    assert "x-acs-security-token" not in headers["Authorization"]
