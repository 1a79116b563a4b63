"""A dropped connection to S3 is a StoreError (exit 3, retried by the agent like any store
error), never a foreign exception such as urllib3's ProtocolError.

Two ways to break the connection: a local server that resets every connection it accepts,
and a botocore ``before-send`` hook on the store's own client that raises, once per request,
what the HTTP layer raises when the peer resets (urllib3 and botocore errors, wrapped or not).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from urllib3.exceptions import ProtocolError

from runctl.errors import StoreError
from runctl.store.s3 import S3Store


def _reset() -> ConnectionResetError:
    return ConnectionResetError(104, "Connection reset by peer")


def _protocol_error() -> ProtocolError:
    return ProtocolError("Connection aborted.", _reset())


def _upload_failed() -> S3UploadFailedError:
    try:
        raise _protocol_error()
    except ProtocolError:
        try:
            raise S3UploadFailedError("Failed to upload f.bin to bucket/key: ('Connection aborted.', ...)")
        except S3UploadFailedError as exc:
            return exc  # its __context__ is the ProtocolError, as boto3's transfer manager leaves it


TRANSPORT_ERRORS = {
    "urllib3 ProtocolError": _protocol_error,
    "ConnectionResetError": _reset,
    "http.client RemoteDisconnected": lambda: http.client.RemoteDisconnected("Remote end closed connection"),
    "ConnectionClosedError": lambda: ConnectionClosedError(endpoint_url="http://s3.test"),
    "EndpointConnectionError": lambda: EndpointConnectionError(endpoint_url="http://s3.test"),
    "ReadTimeoutError": lambda: ReadTimeoutError(endpoint_url="http://s3.test"),
    "S3UploadFailedError wrapping ProtocolError": _upload_failed,
}


def break_requests(store: S3Store, make_error) -> list[str]:
    """Every request of ``store`` raises ``make_error()`` before it is sent; returns the
    operations that were broken."""
    broken: list[str] = []

    def before_send(request, **_kwargs):
        broken.append(request.url)
        raise make_error()

    store.client.meta.events.register("before-send.s3", before_send)
    return broken


@pytest.mark.parametrize("error", TRANSPORT_ERRORS, ids=list(TRANSPORT_ERRORS))
@pytest.mark.parametrize("operation", ["read", "write", "upload", "download", "list_dirs"])
def test_a_dropped_connection_is_a_store_error(s3_store, tmp_path, error, operation):
    source = tmp_path / "f.bin"
    source.write_bytes(b"x" * 1000)
    s3_store.write("a/f.bin", b"x" * 1000)
    calls = {
        "read": lambda: s3_store.read("a/f.bin"),
        "write": lambda: s3_store.write("a/g.bin", b"y"),
        "upload": lambda: s3_store.upload(source, "a/g.bin"),
        "download": lambda: s3_store.download("a/f.bin", tmp_path / "back.bin"),
        "list_dirs": lambda: s3_store.list_dirs(""),
    }
    broken = break_requests(s3_store, TRANSPORT_ERRORS[error])
    with pytest.raises(StoreError) as caught:
        calls[operation]()
    assert broken, "the request never reached the HTTP layer"
    assert s3_store.url in str(caught.value)
    assert not (tmp_path / "back.bin").exists()


def test_an_s3_upload_failed_error_names_the_connection_failure(s3_store, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    break_requests(s3_store, _upload_failed)
    with pytest.raises(StoreError, match="connection to S3 failed while trying to upload"):
        s3_store.upload(source, "a/f.bin")


class ResettingServer:
    """A TCP server that reads each request and resets the connection (RST, no response)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return  # closed
            with conn:
                self.connections += 1
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                except OSError:
                    pass
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def resetting_server():
    server = ResettingServer()
    yield server
    server.close()


def test_a_server_that_resets_the_connection_is_a_store_error(moto_server, resetting_server, tmp_path):
    store = S3Store("bucket-reset", "runs", endpoint_url=resetting_server.url)
    source = tmp_path / "f.bin"
    source.write_bytes(b"x" * 100)
    for call in (lambda: store.upload(source, "a/f.bin"), lambda: store.download("a/f.bin", tmp_path / "b"),
                 lambda: store.read("a/f.bin"), lambda: store.write("a/f.bin", b"x")):
        with pytest.raises(StoreError, match="S3"):
            call()
    assert resetting_server.connections >= 4
