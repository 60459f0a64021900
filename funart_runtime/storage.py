"""Object storage on OSS through oss2, addressed by key only.

Only simple object operations are used (put, get, head, delete, signed URLs):
they behave the same on OSS and on the moto server the tests use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import oss2

from .errors import StorageError
from .logs import log_call
from .settings import Settings

logger = logging.getLogger(__name__)

_ATTEMPTS = 3
_BACKOFF_S = 0.5


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str = field(default="", repr=False)

    @classmethod
    def resolve(cls, headers: Mapping[str, str], settings: Settings) -> Credentials | None:
        """Pick the request's FC role credentials first (they are fresh), then the settings."""
        key_id = headers.get("x-fc-access-key-id", "")
        secret = headers.get("x-fc-access-key-secret", "")
        if key_id and secret:
            return cls(key_id, secret, headers.get("x-fc-security-token", ""))
        if settings.access_key_id and settings.access_key_secret:
            return cls(settings.access_key_id, settings.access_key_secret, settings.security_token)
        return None


class ObjectStore:
    """One OSS bucket."""

    def __init__(
        self, endpoint: str, bucket: str, credentials: Credentials, *, url_expires_s: int
    ) -> None:
        if credentials.security_token:
            auth: oss2.AuthBase = oss2.StsAuth(
                credentials.access_key_id, credentials.access_key_secret,
                credentials.security_token,
            )
        else:
            auth = oss2.Auth(credentials.access_key_id, credentials.access_key_secret)
        self.bucket_name = bucket
        self.url_expires_s = url_expires_s
        self._bucket = oss2.Bucket(auth, endpoint, bucket, connect_timeout=10)

    @classmethod
    def from_settings(cls, settings: Settings, headers: Mapping[str, str]) -> ObjectStore:
        credentials = Credentials.resolve(headers, settings)
        if credentials is None:
            raise StorageError(
                "No OSS credentials: configure a role for the function, or set "
                "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET.",
                code="STORAGE_CREDENTIALS_MISSING",
            )
        return cls(
            settings.oss_endpoint, settings.oss_bucket, credentials,
            url_expires_s=settings.oss_url_expires_s,
        )

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` at ``key``, retrying transient failures with backoff."""
        headers = {"Content-Type": content_type}
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with log_call(logger, "oss.put_object", key=key, bytes=len(data)):
                    self._bucket.put_object(key, data, headers=headers)
                return
            except (oss2.exceptions.RequestError, oss2.exceptions.ServerError) as exc:
                if attempt == _ATTEMPTS:
                    raise self._error("upload", key, exc) from None
                time.sleep(_BACKOFF_S * 2 ** (attempt - 1))
            except oss2.exceptions.OssError as exc:
                raise self._error("upload", key, exc) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            with log_call(logger, "oss.get_object", key=key):
                return bytes(self._bucket.get_object(key).read())
        except oss2.exceptions.NoSuchKey:
            raise StorageError(
                f"Object {key!r} does not exist in bucket {self.bucket_name}.",
                code="OBJECT_NOT_FOUND", status=404, details={"key": key},
            ) from None
        except (oss2.exceptions.OssError, oss2.exceptions.RequestError) as exc:
            raise self._error("download", key, exc) from None

    def exists(self, key: str) -> bool:
        try:
            with log_call(logger, "oss.head_object", key=key):
                return bool(self._bucket.object_exists(key))
        except (oss2.exceptions.OssError, oss2.exceptions.RequestError) as exc:
            raise self._error("check", key, exc) from None

    def sign_get_url(self, key: str) -> str:
        """Return a signed GET URL for ``key``, valid for FUNART_OSS_URL_EXPIRES_S."""
        return str(self._bucket.sign_url("GET", key, self.url_expires_s, slash_safe=True))

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        status = getattr(exc, "status", None)
        reason = getattr(exc, "message", None) or getattr(exc, "code", None) or str(exc)
        return StorageError(
            f"OSS {action} of {key!r} in bucket {self.bucket_name} failed "
            f"(HTTP {status}): {reason}. Check FUNART_OSS_ENDPOINT, FUNART_OSS_BUCKET and "
            "the role's OSS permissions.",
            details={"key": key, "bucket": self.bucket_name, "status": status},
        )
