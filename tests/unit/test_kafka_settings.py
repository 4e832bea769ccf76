"""Deployment settings: the app id follows the topic prefix, one set of connection options for
every Kafka client, existing topics checked against the settings, readiness reasons."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from streams.kafka import check_security, client_options, faust_credentials, topic_configs
from streams.settings import ENV_VARS, Settings, derived_app_id
from streams.topics import Existing, differences
from streams.worker.web import readiness

ROOT = Path(__file__).resolve().parents[2]


def test_default_deployment_keeps_its_app_id() -> None:
    """The default prefix keeps today's consumer group and changelogs (``tipstream``)."""
    assert Settings().group_id == "tipstream"
    assert ENV_VARS["TIPSTREAM_APP_ID"] == ""


def test_app_id_follows_the_prefix() -> None:
    """Two prefixes never share a group: the tests' ``test-<tag>`` gets ``tipstream-test-<tag>``."""
    assert Settings(topic_prefix="test-ab12").group_id == "tipstream-test-ab12"
    assert derived_app_id("staging") != derived_app_id("production")
    Settings(topic_prefix="staging", app_id="tipstream-staging").check_isolation()


def test_app_id_disagreeing_with_the_prefix_is_refused() -> None:
    """An explicit app id that is not the prefix's is refused, naming both and the fix."""
    settings = Settings(topic_prefix="staging", app_id="tipstream")
    with pytest.raises(SystemExit, match=r"TIPSTREAM_APP_ID='tipstream'.*'tipstream-staging'"):
        settings.check_isolation()


def test_plaintext_options_are_the_bootstrap_servers() -> None:
    options = client_options(Settings(kafka_url="kafka://a:1;kafka://b:2"))
    assert options == {"bootstrap_servers": "a:1,b:2", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


def test_sasl_ssl_options_carry_login_and_tls(tmp_path: Path) -> None:
    """SASL_SSL gives aiokafka and Faust the same mechanism, login and a verifying context."""
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc",
        kafka_sasl_password="secret",
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "secret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-256"


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    """SSL with a certificate and key: the context holds them (a throwaway self-signed pair)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t",
         "-keyout", str(key), "-out", str(cert), "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(cert),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
    )
    assert client_options(settings)["security_protocol"] == "SSL"
    assert faust_credentials(settings).protocol.value == "SSL"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "MD5",
          "kafka_sasl_username": "u"}, "KAFKA_SASL_MECHANISM"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "KAFKA_SASL_USERNAME"),
        ({"kafka_ssl_certfile": "c.pem"}, "KAFKA_SSL_KEYFILE"),
        ({"replication_factor": 1, "min_insync_replicas": 2}, "cannot exceed"),
    ],
)  # fmt: skip
def test_unworkable_connection_settings_are_refused(
    changes: dict[str, object], message: str
) -> None:
    """A setting that cannot work is refused before any client connects, naming the variable."""
    with pytest.raises(ValueError, match=message):
        check_security(Settings().replace(**changes))


def test_topics_are_created_with_min_insync_replicas() -> None:
    settings = Settings(replication_factor=3, min_insync_replicas=2)
    assert topic_configs(settings) == {"min.insync.replicas": "2"}
    assert topic_configs(settings, compacted=True)["cleanup.policy"] == "compact"


def test_partitions_and_policy_differences_refuse_replication_differences_warn() -> None:
    """Wrong partitions or cleanup policy refuse the start; fewer replicas or a lower
    min.insync.replicas only warn; each names the topic and both values."""
    settings = Settings(replication_factor=3, min_insync_replicas=2)
    existing = Existing(2, 1, {"cleanup.policy": "delete", "min.insync.replicas": "1"})
    found = differences(settings, "p.snapshots", existing, partitions=1, compacted=True)
    by_what = {d.what: d for d in found}
    assert set(by_what) == {
        "partitions",
        "cleanup.policy",
        "replication factor",
        "min.insync.replicas",
    }
    assert by_what["partitions"].refuses
    assert by_what["cleanup.policy"].refuses
    assert not by_what["replication factor"].refuses
    assert not by_what["min.insync.replicas"].refuses
    assert str(by_what["partitions"]) == "p.snapshots: partitions is 2, the settings want 1"


def test_a_matching_topic_has_no_differences() -> None:
    settings = Settings(replication_factor=3, min_insync_replicas=2)
    existing = Existing(4, 3, {"cleanup.policy": "delete", "min.insync.replicas": "2"})
    assert differences(settings, "t", existing, partitions=4, compacted=False) == []
    # Faust's changelogs: neither partitions nor policy are ours to check.
    changelog = Existing(4, 3, {"cleanup.policy": "compact", "min.insync.replicas": "2"})
    assert differences(settings, "c", changelog, partitions=None, compacted=None) == []


def test_ready_only_when_recovered_assigned_and_connected() -> None:
    """Each unmet condition is one reason; none means ready."""
    assert (
        readiness(rebalancing=False, in_recovery=False, recovered=True, partitions=3, database=None)
        == []
    )
    reasons = readiness(
        rebalancing=True, in_recovery=True, recovered=False, partitions=0, database="refused"
    )
    assert reasons == [
        "rebalancing",
        "recovering tables from their changelogs",
        "no partitions assigned",
        "database unreachable: refused",
    ]


def test_every_new_setting_is_documented() -> None:
    """Each deployment setting has a row in the README and in docs/DEPLOYMENT.md."""
    readme = (ROOT / "README.md").read_text()
    deployment = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    for name in (
        "TIPSTREAM_APP_ID",
        "TIPSTREAM_REPLICATION_FACTOR",
        "TIPSTREAM_MIN_INSYNC_REPLICAS",
        "TIPSTREAM_KAFKA_SECURITY_PROTOCOL",
        "TIPSTREAM_KAFKA_SASL_MECHANISM",
        "TIPSTREAM_KAFKA_SASL_USERNAME",
        "TIPSTREAM_KAFKA_SASL_PASSWORD",
        "TIPSTREAM_KAFKA_SSL_CAFILE",
        "TIPSTREAM_KAFKA_SSL_CERTFILE",
        "TIPSTREAM_KAFKA_SSL_KEYFILE",
        "TIPSTREAM_WEB_HOST",
    ):
        assert name in ENV_VARS
        assert f"`{name}`" in readme, name
        assert f"`{name}`" in deployment, name
