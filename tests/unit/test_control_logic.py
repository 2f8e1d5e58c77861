"""Control-plane logic without a broker: signatures, admission, standing commands,
the action registry, rollback plans, and pause/resume at run boundaries."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agents_bridge import AgentKilled
from agents_bridge.actions import ActionRegistry
from agents_bridge.command_gate import CommandGate
from agents_bridge.rollback import JournaledAction, compensate, plan_rollback
from agents_bridge.signing import CommandSigner, parse_keys
from app.commands import new_command
from tests.unit.test_bridge import Recorder

OLD, NEW = "old:old-secret-0123456789", "new:new-secret-0123456789"


def _command(kind: str = "KILL", target: str = "a1", **fields: Any) -> dict[str, Any]:
    return {**new_command(kind, "agent", target, "why", issuer="test"), **fields}


class TestSignatures:
    def test_a_signed_command_verifies_and_any_change_breaks_it(self) -> None:
        signer = CommandSigner(NEW)
        signed = signer.sign(_command())
        assert signer.rejection(signed) is None
        for field, value in [("kind", "RESUME"), ("target_id", "a2"), ("issued_at", 1)]:
            assert signer.rejection({**signed, field: value}) == "forged", field

    def test_rotation_verifies_old_and_new_keys_and_signs_with_the_first(self) -> None:
        rotated = CommandSigner(f"{NEW},{OLD}")
        assert rotated.sign(_command())["key_id"] == "new"
        assert rotated.rejection(CommandSigner(OLD).sign(_command())) is None
        assert CommandSigner(NEW).rejection(CommandSigner(OLD).sign(_command())) == "unknown_key"

    def test_unsigned_and_same_key_id_with_another_secret(self) -> None:
        signer = CommandSigner(NEW)
        assert signer.rejection(_command()) == "unsigned"
        forged = CommandSigner("new:guessed-secret-0123456789").sign(_command())
        assert signer.rejection(forged) == "forged"

    @pytest.mark.parametrize("value", ["", "nokey", "id:short", " , "])
    def test_bad_key_settings_name_the_variable(self, value: str) -> None:
        with pytest.raises(ValueError, match="TRC_SIGNING_KEYS"):
            parse_keys(value)


class TestAdmission:
    def _gate(self) -> tuple[CommandGate, CommandSigner]:
        signer = CommandSigner(NEW)
        return CommandGate(signer), signer

    def test_expired_and_replayed_commands_are_refused(self) -> None:
        gate, signer = self._gate()
        now = _command()["issued_at"]
        assert gate.rejection(signer.sign(_command(expires_at=now - 1)), now) == "expired"
        kill = signer.sign(_command())
        assert gate.rejection(kill, now) is None
        assert gate.rejection(kill, now) == "replayed", "the same command twice"
        older = signer.sign(_command("PAUSE", issued_at=kill["issued_at"] - 10))
        assert gate.rejection(older, now) == "replayed", "older than the target's latest"

    def test_kill_and_pause_stand_until_resumed_or_cleared(self) -> None:
        gate, signer = self._gate()
        now = _command()["issued_at"]
        kill = signer.sign(_command("KILL", "a1"))
        assert gate.rejection(kill, now) is None
        assert gate.rejection(signer.sign(_command("PAUSE", "a2")), now) is None
        assert set(gate.standing) == {"agent:a1", "agent:a2"}
        resume = signer.sign(_command("RESUME", "a1", issued_at=kill["issued_at"] + 1))
        assert gate.rejection(resume, now) is None
        gate.clear("agent:a2")
        assert gate.standing == {}

    def test_a_command_api_input_is_validated(self) -> None:
        with pytest.raises(ValueError, match="KILL, PAUSE, RESUME, ROLLBACK"):
            new_command("STOP", "agent", "a", "r", issuer="i")
        with pytest.raises(ValueError, match="agent, task, chain, all"):
            new_command("KILL", "fleet", "a", "r", issuer="i")
        assert new_command("KILL", "all", "", "r", issuer="i")["target_id"] == "*"


class TestRegistryAndRollbackPlan:
    def test_registry_rejects_what_it_could_not_roll_back(self) -> None:
        registry = ActionRegistry()
        with pytest.raises(ValueError, match="needs compensate"):
            registry.register("write_row", kind="write")
        with pytest.raises(ValueError, match="must be one of read, write, irreversible"):
            registry.register("x", kind="dangerous")  # type: ignore[arg-type]
        assert registry.spec("unknown").kind == "irreversible"
        assert not registry.spec("unknown").registered

        @registry.action("write", compensate=lambda args, result: None)
        def create_file(path: str) -> str:
            return path

        assert registry.spec("create_file").on_kill == "finish"
        assert create_file("p") == "p", "the decorator returns the function itself"

    def test_plan_is_newest_first_and_escalates_what_cannot_be_undone(self) -> None:
        registry = ActionRegistry()
        registry.register("write", kind="write", compensate=lambda a, r: None)
        registry.register("read", kind="read")
        registry.register("email", kind="irreversible")
        actions = [
            JournaledAction(registry.spec(name), {}, i, status=status)
            for i, (name, status) in enumerate(
                [
                    ("write", "ok"),
                    ("read", "ok"),
                    ("email", "ok"),
                    ("mystery", "ok"),
                    ("write", "error"),
                    ("write", "in_flight"),
                    ("write", "compensated"),
                ]
            )
        ]
        plan = [(step.action.step_index, step.do, step.reason) for step in plan_rollback(actions)]
        assert plan == [
            (6, "nothing", "already compensated"),
            (5, "escalate", "interrupted"),
            (4, "nothing", "write"),
            (3, "escalate", "unregistered"),
            (2, "escalate", "irreversible"),
            (1, "nothing", "read"),
            (0, "compensate", "write"),
        ]

    def test_a_compensation_is_retried_then_reported(self) -> None:
        registry = ActionRegistry()
        calls: list[int] = []

        def flaky(args: Any, result: Any) -> None:
            calls.append(1)
            raise OSError("still down")

        registry.register("w", kind="write", compensate=flaky)
        step = plan_rollback([JournaledAction(registry.spec("w"), {}, 1, status="ok")])[0]
        attempts: list[tuple[int, bool]] = []
        error = compensate(
            step, attempts=3, backoff_s=0, on_attempt=lambda n, e: attempts.append((n, e is None))
        )
        assert isinstance(error, OSError) and len(calls) == 3
        assert attempts == [(1, False), (2, False), (3, False)]


class TestPauseAndResume:
    def test_pause_blocks_at_the_next_boundary_until_resume(self) -> None:
        recorder = Recorder()
        run = recorder.run()
        steps: list[int] = []
        paused_at_boundary = threading.Event()

        def agent() -> None:
            with run:
                for _ in range(4):
                    run.step("s")
                    steps.append(run.step_index)
                    if run.step_index == 2:
                        run.apply({**_command("PAUSE"), "issued_at": 1})

        original_ack = run._acknowledge

        def spy(command: dict[str, Any], status: str) -> None:
            original_ack(command, status)
            if status == "paused":
                paused_at_boundary.set()

        run._acknowledge = spy  # type: ignore[method-assign]
        thread = threading.Thread(target=agent)
        thread.start()
        assert paused_at_boundary.wait(5), "the pause never took effect"
        assert steps == [1, 2] and thread.is_alive(), "step 3 must wait for RESUME"
        run.apply({**_command("RESUME"), "issued_at": 2})
        thread.join(5)
        assert steps == [1, 2, 3, 4]
        assert [e["status"] for e in recorder.of("control_ack")] == ["paused", "resumed"]

    def test_a_kill_wakes_a_paused_run_and_halts_it_with_a_checkpoint(self) -> None:
        recorder = Recorder()
        run = recorder.run()
        run.apply({**_command("PAUSE"), "issued_at": 1})
        outcome: list[BaseException] = []

        def agent() -> None:
            try:
                with run:
                    run.step("blocked here")
            except AgentKilled as exc:
                outcome.append(exc)

        thread = threading.Thread(target=agent)
        thread.start()
        kill = {**_command("KILL"), "issued_at": 2}
        while not recorder.of("control_ack"):  # the pause took effect
            thread.join(0.01)
        run.apply(kill)
        thread.join(5)
        assert outcome and outcome[0].command is kill  # type: ignore[attr-defined]
        assert [c for _, c in recorder.checkpoints] == [kill]
        assert recorder.of("task_end")[0]["status"] == "killed"
