"""Settings, topic names and command construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents_bridge.codec import codec
from agents_bridge.settings import SettingsError, load_settings
from agents_bridge.topics import EVENTS_PATTERN, events_topic
from app.commands import command_key, new_command


class TestSettings:
    def test_defaults_work_with_the_embedded_broker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key in ("TRC_BOOTSTRAP_SERVERS", "TRC_SETTINGS_FILE", "TRC_WEB_PORT"):
            monkeypatch.delenv(key, raising=False)
        settings = load_settings()
        assert settings.bootstrap_servers == "127.0.0.1:9092"
        assert settings.web_port == 6066

    def test_environment_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRC_WEB_PORT", "7000")
        monkeypatch.setenv("TRC_CAPTURE_TOOL_ARGS", "true")
        settings = load_settings()
        assert settings.web_port == 7000 and settings.capture_tool_args is True

    @pytest.mark.parametrize(
        ("key", "value", "message"),
        [
            ("TRC_WEB_PORT", "99999", "TRC_WEB_PORT='99999': Input should be less than or equal"),
            ("TRC_HEARTBEAT_INTERVAL_S", "soon", "TRC_HEARTBEAT_INTERVAL_S='soon'"),
            ("TRC_TABLE_STORE", "redis://", "TRC_TABLE_STORE='redis://'"),
        ],
    )
    def test_a_bad_value_names_the_variable_and_the_fix(
        self, monkeypatch: pytest.MonkeyPatch, key: str, value: str, message: str
    ) -> None:
        monkeypatch.setenv(key, value)
        with pytest.raises(SettingsError) as error:
            load_settings()
        assert message in str(error.value)
        assert "fix the environment variable" in str(error.value)

    def test_settings_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        path = tmp_path / "trc.toml"
        path.write_text('app_id = "from-file"\nweb_port = 7100\n')
        monkeypatch.setenv("TRC_SETTINGS_FILE", str(path))
        monkeypatch.setenv("TRC_WEB_PORT", "7200")  # the environment wins over the file
        settings = load_settings()
        assert (settings.app_id, settings.web_port) == ("from-file", 7200)
        path.write_text("no_such_setting = 1\n")
        with pytest.raises(SettingsError, match="NO_SUCH_SETTING"):
            load_settings()

    def test_missing_settings_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("TRC_SETTINGS_FILE", str(tmp_path / "absent.toml"))
        with pytest.raises(SettingsError, match="TRC_SETTINGS_FILE"):
            load_settings()


class TestTopicsAndCommands:
    def test_agent_topics(self) -> None:
        assert events_topic("planner-1") == "trc.events.planner-1"
        assert EVENTS_PATTERN.match(events_topic("a.b_c-1"))
        with pytest.raises(ValueError, match="letters, digits"):
            events_topic("bad id/with slash")

    def test_commands_are_keyed_by_target_and_encodable(self) -> None:
        command = new_command("KILL", "task", "t-9", "loop", issuer="trc/loop", anomaly_id="x")
        assert command_key(command) == b"task:t-9"
        assert command["kind"] == "KILL" and command["issued_at"] > 0
        other = new_command("KILL", "task", "t-9", "loop", issuer="trc/loop")
        assert other["command_id"] != command["command_id"], "each command is its own id"
        _, decoded = codec.decode(codec.encode("trc.ControlCommand", command))
        assert decoded == command
