"""The one typed settings object shared by the agent bridge and the cluster app.

Values come from keyword overrides, then ``TRC_*`` environment variables, then
an optional TOML file named by ``TRC_SETTINGS_FILE``, then the defaults below,
which work against the embedded broker on loopback.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["DEV_API_TOKEN", "DEV_SIGNING_KEYS", "Settings", "SettingsError", "load_settings"]

_ENV_PREFIX = "TRC_"

DEV_SIGNING_KEYS = "dev:trc-development-signing-key"
"""Works out of the box on a laptop; refused when ``production`` is on."""
DEV_API_TOKEN = "trc-development-token"
"""The command API's bearer token when none is set; refused when ``production`` is on."""


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the key and the fix."""


class Settings(BaseSettings):
    """Everything configurable, for both sides of the system."""

    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="forbid", frozen=True)

    # Broker
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )

    # Cluster app
    app_id: str = Field("trc", min_length=1, description="Faust app id and consumer group prefix.")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)
    partitions: int = Field(4, ge=1, description="Partitions of the topics the app creates.")
    topic_discovery_interval_ms: int = Field(
        200, ge=50, le=1000, description="How often new agent topics are looked for."
    )
    broker_session_timeout_s: float = Field(6.0, ge=1.0)
    trace_retention_s: float = Field(
        24 * 3600.0, gt=0, description="Chains and tasks idle this long leave the trace store."
    )
    trace_max_events: int = Field(
        10_000, ge=100, description="Events the trace store keeps per chain (oldest go first)."
    )
    canonical_url: str | None = Field(
        None,
        description="URL other workers reach this one at (default http://WEB_HOST:WEB_PORT); "
        "set it when WEB_HOST is 0.0.0.0.",
    )
    producer_request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long the worker waits for the broker to acknowledge a send "
        "before it fails and is retried.",
    )
    fetch_max_wait_ms: int = Field(
        10,
        ge=1,
        le=1500,
        description="Longest an app consumer's fetch waits for data. Tansu answers a long poll "
        "late, so keep it small there; on Kafka 100-500 saves idle fetches.",
    )
    data_dir: Path = Field(Path(".trc-data"), description="Worker table store directory.")
    table_flush_interval_ms: int = Field(
        1000,
        ge=0,
        le=60_000,
        description="Longest a changed table key waits before it is written to its changelog "
        "(always before offsets are committed). Longer: fewer changelog records.",
    )

    # Detection
    policy_file: Path | None = Field(
        None, description="TOML policy file: thresholds, categories, per-agent-type overrides."
    )
    table_store: str = Field(
        "memory://",
        pattern=r"^(memory|rocksdb)://$",
        description="Faust table store: memory:// or rocksdb:// (RocksDB via rocksdict, for "
        "large state; pip install 'total-runtime-control[rocksdb]').",
    )

    # Agent bridge
    emit_queue_size: int = Field(100_000, ge=1)
    emit_linger_ms: int = Field(2, ge=0, le=1000)
    sender: Literal["process", "thread"] = Field(
        "process",
        description="Where events are encoded and sent: a child process (the agent's thread "
        "only copies them to shared memory; Linux, elsewhere the thread) or a thread of the "
        "agent's process.",
    )
    capture_tool_args: bool = Field(
        False, description="Send canonical tool arguments, not only their hash."
    )
    capture_reasoning: bool = Field(False, description="Send chain-of-thought excerpts.")
    capture_context: bool = Field(
        False, description="Send the raw context window (after redaction), not only its hash."
    )
    strict: bool = Field(
        False, description="Raise on invalid agent input instead of counting it (for tests)."
    )
    max_text_chars: int = Field(2000, ge=16, description="Longest free-text field sent.")
    price_table_file: Path | None = Field(
        None, description='JSON {"model": [USD per 1M prompt, per 1M completion tokens]}.'
    )
    flush_timeout_s: float = Field(5.0, gt=0)
    send_timeout_s: float = Field(
        3.0, gt=0, description="An unacknowledged send after this spills to the journal."
    )
    journal_dir: Path = Field(
        Path(".trc-journal"), description="Where events wait while the broker is unreachable."
    )
    journal_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Past this, new events are dropped and counted."
    )
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Executor heartbeat period; 2 missed beats raise an alert."
    )
    control_fetch_max_wait_ms: int = Field(
        50, ge=1, le=500, description="Longest the control listener's fetch waits for a command."
    )
    control_attach_timeout_s: float = Field(
        10.0, ge=0, description="How long Monitor.start() waits for trc.control to be readable."
    )
    replication_factor: int = Field(1, ge=1, description="Replication of topics created here.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(
        None, description="CA bundle that signed the brokers' certificates."
    )
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")

    # Control plane
    production: bool = Field(
        False, description="Refuse the development signing key and API token; set both."
    )
    signing_keys: SecretStr = Field(
        SecretStr(DEV_SIGNING_KEYS),
        description="'key_id:secret[,key_id:secret...]': the first signs, all verify (rotation).",
    )
    api_token: SecretStr = Field(
        SecretStr(DEV_API_TOKEN), description="Bearer token of the command API."
    )
    command_history_scan_s: float = Field(
        10.0,
        gt=0,
        description="How long a starting monitor may read trc.control for standing commands.",
    )

    @model_validator(mode="after")
    def _production_has_secrets(self) -> Settings:
        if self.production:
            if self.signing_keys.get_secret_value() == DEV_SIGNING_KEYS:
                raise ValueError(
                    "signing_keys: production mode needs TRC_SIGNING_KEYS='key_id:secret' "
                    "(the development key is public)"
                )
            if self.api_token.get_secret_value() == DEV_API_TOKEN:
                raise ValueError(
                    "api_token: production mode needs TRC_API_TOKEN (no default token)"
                )
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"sasl_username: security_protocol {self.security_protocol} needs "
                "TRC_SASL_USERNAME and TRC_SASL_PASSWORD"
            )
        return self

    def kafka_security(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client: TLS and SASL as configured."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile:
                context.load_cert_chain(
                    str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
                )
            options["ssl_context"] = context
        if self.security_protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get(f"{_ENV_PREFIX}SETTINGS_FILE")
        if settings_file:
            if not Path(settings_file).is_file():
                raise SettingsError(
                    f"{_ENV_PREFIX}SETTINGS_FILE={settings_file!r} is not a file; "
                    "point it at a TOML file or unset it."
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=settings_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation failures into one readable error."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            if not key:  # a rule across fields: its message names the key
                problems.append(error["msg"].removeprefix("Value error, "))
                continue
            field = Settings.model_fields.get(key)
            hint = f" ({field.description})" if field and field.description else ""
            problems.append(
                f"{_ENV_PREFIX}{key.upper()}={error.get('input')!r}: {error['msg']}{hint}"
            )
        raise SettingsError(
            "invalid settings:\n  "
            + "\n  ".join(problems)
            + "\nfix the environment variable or the TRC_SETTINGS_FILE entry named above."
        ) from None
