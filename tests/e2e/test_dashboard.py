"""The live dashboard in headless Chromium against a real broker, worker and agents.

Debian's ``chromium`` and ``chromium-driver`` packages, driven by Selenium; no
browser download. Every test leaves a screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents_bridge import AgentKilled, Monitor, load_settings
from app.worker_process import WorkerProcess
from tests.conftest import ARTIFACTS
from tests.integration.conftest import unique, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")

if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402 - only once the browser is known to be there
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# A MutationObserver stamps the moment each agent's state cell changes, in the page's
# own clock (the same host clock the agents stamp their events with).
RECORD_STATE_CHANGES = """
window.__stateSeen = {};
window.__noReload = 'still the first page load';
new MutationObserver(() => {
  for (const tr of document.querySelectorAll('#fleet tbody tr')) {
    const key = tr.dataset.agent + ':' + tr.dataset.state;
    if (!(key in window.__stateSeen)) window.__stateSeen[key] = Date.now() / 1000;
  }
}).observe(document.querySelector('#fleet tbody'),
           {subtree: true, childList: true, attributes: true});
"""


@pytest.fixture(scope="module")
def worker(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    # The healthy agent steps for as long as the test needs; the looper keeps the defaults.
    policy.write_text("[agent_types.weather]\nsteps = { warn = 5000, kill = 10000 }\n")
    # Dev mode (production off): the page is given the API token.
    env = worker_env(bootstrap_servers, TRC_POLICY_FILE=str(policy))
    with WorkerProcess(env, ARTIFACTS / f"worker-e2e-{env['TRC_APP_ID']}.log") as process:
        yield process


@pytest.fixture
def monitor(bootstrap_servers: str, worker: WorkerProcess) -> Iterator[Monitor]:
    with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as started:
        yield started


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"dashboard-{request.node.name}.png"))
        driver.quit()


def open_dashboard(browser: WebDriver, worker: WorkerProcess) -> None:
    browser.get(worker.url("/"))
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "connection").text == "live",
        "the dashboard did not connect to /api/stream",
    )
    browser.execute_script(RECORD_STATE_CHANGES)


def wait_state(browser: WebDriver, agent: str, state: str, within_s: float = 15.0) -> float:
    """Wait until ``agent``'s row has shown ``state``; returns when the page first showed it."""
    script = f"return window.__stateSeen['{agent}:{state}'] || null;"
    seen = WebDriverWait(browser, within_s, poll_frequency=0.05).until(
        lambda d: d.execute_script(script),
        f"{agent} never showed {state!r} on the dashboard",
    )
    return float(seen)


def click_command(browser: WebDriver, agent: str, kind: str) -> None:
    browser.execute_script("document.getElementById('toast').textContent = '';")
    row = browser.find_element(By.CSS_SELECTOR, f'#fleet tbody tr[data-agent="{agent}"]')
    row.find_element(By.CSS_SELECTOR, f'button[data-action="{kind}"]').click()
    dialog = browser.find_element(By.ID, "confirm")
    WebDriverWait(browser, 5).until(lambda d: dialog.is_displayed(), "no confirmation dialog")
    assert kind in browser.find_element(By.ID, "confirm-text").text
    browser.find_element(By.ID, "confirm-ok").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "toast").text.startswith(kind),  # this answer, not the last
        f"no answer to {kind} from the command API",
    )
    toast = browser.find_element(By.ID, "toast").text
    assert "accepted" in toast, f"the command API refused {kind}: {toast}"


def in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_looping_agent_raises_an_alert_and_turns_killed_live(
    browser: WebDriver, worker: WorkerProcess, monitor: Monitor
) -> None:
    open_dashboard(browser, worker)
    looper = unique("looper")
    outcome: dict[str, Any] = {}

    def looping_agent() -> None:
        try:
            with monitor.run(looper, agent_type="support-bot") as run:
                for _ in range(20):
                    run.step("search")
                    run.tool_call("kb_search", {"query": "refund policy", "limit": 5})
                    time.sleep(0.3)  # long enough for the page to show it running
        except AgentKilled:
            outcome["killed_at"] = time.time()  # the control_ack is out by now

    thread = in_thread(looping_agent)
    wait_state(browser, looper, "running")
    alert = WebDriverWait(browser, 20, poll_frequency=0.05).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, f'#alerts li[data-agent="{looper}"][data-detector="reasoning_loop"]'
        ),
        "no reasoning_loop alert on the dashboard",
    )[0]
    assert "KILL issued" in alert.text
    shown_killed_at = wait_state(browser, looper, "killed")
    thread.join(10)
    assert "killed_at" in outcome, "the agent was never killed"
    assert shown_killed_at - outcome["killed_at"] < 1.0, "the page lagged the kill by over 1 s"
    assert browser.execute_script("return window.__noReload;"), "the page was reloaded"

    # The alert links to the chain: the trace view names the root cause.
    alert.find_element(By.LINK_TEXT, "trace").click()
    cause = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "root-cause"), "the trace view shows no root cause"
    )
    assert cause.text.startswith(f"root cause: {looper}")
    assert "reasoning_loop" in cause.text
    assert browser.find_elements(By.CSS_SELECTOR, "#trace-graph svg .graph-node")
    assert browser.find_elements(By.CSS_SELECTOR, "#trace-timeline .timeline-bar.root")


def test_pause_resume_and_kill_a_healthy_agent_from_the_dashboard(
    browser: WebDriver, worker: WorkerProcess, monitor: Monitor
) -> None:
    open_dashboard(browser, worker)
    agent = unique("healthy")
    outcome: dict[str, Any] = {}

    def healthy_agent() -> None:
        try:
            with monitor.run(agent, agent_type="weather") as run:
                for step in range(600):
                    run.step(f"forecast {step}")
                    run.llm_call(model="gpt-4o", prompt_tokens=50, completion_tokens=10)
                    time.sleep(0.1)
        except AgentKilled:
            outcome["killed"] = True

    thread = in_thread(healthy_agent)
    wait_state(browser, agent, "running")
    row = browser.find_element(By.CSS_SELECTOR, f'#fleet tbody tr[data-agent="{agent}"]')
    WebDriverWait(browser, 5).until(
        lambda d: row.find_element(By.CSS_SELECTOR, ".col-tpm").text not in ("", "0"),
        "tokens per minute never showed",
    )

    click_command(browser, agent, "PAUSE")
    wait_state(browser, agent, "paused")
    browser.save_screenshot(str(ARTIFACTS / "dashboard-paused.png"))
    assert row.find_element(By.CSS_SELECTOR, 'button[data-action="RESUME"]').is_enabled()
    assert not row.find_element(By.CSS_SELECTOR, 'button[data-action="PAUSE"]').is_enabled()

    click_command(browser, agent, "RESUME")
    resumed_at = time.time()
    WebDriverWait(browser, 15, poll_frequency=0.05).until(
        lambda d: (
            d.find_elements(
                By.CSS_SELECTOR, f'#fleet tbody tr[data-agent="{agent}"][data-state="running"]'
            )
            and time.time() > resumed_at
        ),
        "the agent never ran again after RESUME",
    )

    click_command(browser, agent, "KILL")
    wait_state(browser, agent, "killed")
    thread.join(10)
    assert outcome.get("killed"), "the agent did not stop on KILL"
    assert browser.execute_script("return window.__noReload;"), "the page was reloaded"
