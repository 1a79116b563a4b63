"""Which instance the agent runs on: from the metadata service (the IMDS emulator), or as
given; no id and no metadata service is a usage error."""

from __future__ import annotations

import pytest

from runctl.agent.identity import InstanceIdentity, discover_identity
from runctl.testing.imds import imds  # noqa: F401 (the IMDS emulator fixture)


def test_identity_comes_from_the_metadata_service(imds):
    identity = discover_identity()
    assert identity == InstanceIdentity(imds.instance_id, imds.region, imds.instance_type, imds.availability_zone,
                                        "10.0.0.10", confirmed=True)
    assert identity.attempt_labels() == {"instance_id": imds.instance_id, "instance_type": imds.instance_type,
                                         "az": imds.availability_zone}
    given = discover_identity("i-given", "eu-west-1")
    assert (given.instance_id, given.region, given.instance_type) == ("i-given", "eu-west-1", imds.instance_type)


def test_the_private_address_is_the_metadata_services_local_ipv4(monkeypatch):
    from runctl.testing.imds import ImdsEmulator

    with ImdsEmulator(private_ip="127.0.0.7") as emulator:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", emulator.endpoint)
        assert discover_identity().address == "127.0.0.7"
        assert emulator.count("/latest/meta-data/local-ipv4") == 1


def test_no_instance_id_without_the_metadata_service(monkeypatch):
    from runctl.errors import UsageError

    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    with pytest.raises(UsageError, match="--instance-id"):
        discover_identity(attempts=2, delay=0.01)
