"""How every Kafka client of the service connects: one place that turns the settings into
aiokafka connection options and Faust broker credentials.

The worker's Faust consumer and producer, its output producer, the snapshot follower, the
admin client of ``ensure_topics`` and every command-line producer and consumer take their
bootstrap servers, TLS and SASL from here, so a secured cluster is configured once.
"""

from __future__ import annotations

import ssl
from typing import Any

from streams.settings import ENV_PREFIX, Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def check_security(settings: Settings) -> None:
    """Refuse a connection setting that cannot work, naming the variable, before any client
    tries (and fails with a less helpful error)."""
    protocol = settings.kafka_security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(
            f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL must be one of "
            f"{', '.join(SECURITY_PROTOCOLS)}, got {protocol!r}"
        )
    if protocol.startswith("SASL_"):
        if settings.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                f"got {settings.kafka_sasl_mechanism!r}"
            )
        if not settings.kafka_sasl_username:
            raise ValueError(f"{ENV_PREFIX}KAFKA_SASL_USERNAME is required with {protocol}")
    if bool(settings.kafka_ssl_certfile) != bool(settings.kafka_ssl_keyfile):
        raise ValueError(
            f"{ENV_PREFIX}KAFKA_SSL_CERTFILE and {ENV_PREFIX}KAFKA_SSL_KEYFILE go together"
        )
    if settings.replication_factor < 1 or settings.min_insync_replicas < 1:
        raise ValueError(
            f"{ENV_PREFIX}REPLICATION_FACTOR and {ENV_PREFIX}MIN_INSYNC_REPLICAS must be >= 1"
        )
    if settings.min_insync_replicas > settings.replication_factor:
        raise ValueError(
            f"{ENV_PREFIX}MIN_INSYNC_REPLICAS ({settings.min_insync_replicas}) cannot exceed "
            f"{ENV_PREFIX}REPLICATION_FACTOR ({settings.replication_factor}): "
            "every write would be refused"
        )


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the settings (CA, optional client certificate), or None without TLS."""
    if not uses_tls(settings):
        return None
    context = ssl.create_default_context(
        purpose=ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_cafile or None
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin): the bootstrap
    servers and the security settings. Callers add their own behaviour options."""
    check_security(settings)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the settings (None for PLAINTEXT): Faust hands them to
    its own aiokafka consumer and producer (``credentials_to_aiokafka_auth``)."""
    from faust.auth import SASLCredentials, SSLCredentials

    check_security(settings)
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_context=ssl_context(settings),
            mechanism=settings.kafka_sasl_mechanism,
        )
    if protocol == "SSL":
        return SSLCredentials(ssl_context(settings))
    return None


def topic_configs(settings: Settings, *, compacted: bool = False) -> dict[str, str]:
    """The configs every topic of the deployment is created with (ours and Faust's)."""
    configs = {"min.insync.replicas": str(settings.min_insync_replicas)}
    if compacted:
        configs["cleanup.policy"] = "compact"
    return configs
