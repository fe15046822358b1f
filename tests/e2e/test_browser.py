"""MLflow's UI in a real browser, under a Databricks Apps host name, through the front."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect, sync_playwright

pytestmark = pytest.mark.e2e

PUBLIC_HOST = "mlflow-app-1234.aws.databricksapps.com"  # matched by the default `*.databricksapps.com`
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No internet here: keep Chromium from calling home so that every request we see is the UI's.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {PUBLIC_HOST} 127.0.0.1",
]
UI_TIMEOUT_MS = 60_000  # the first load parses a 4.5 MB bundle on a 2-core machine

RUN_NAME = "browser-run"
LOSSES = [0.9, 0.7, 0.5, 0.35, 0.25]
ARTIFACT_PATH = "notes/hello.txt"
ARTIFACT_TEXT = "hello from the browser test"

# The UI asks MLflow's basic-auth plugin who the user is and reads a 404 as "no auth"; a server
# without that plugin (plain `mlflow server` too) answers exactly this, so it is no failure.
EXPECTED_MLFLOW_ANSWERS = {("GET", "/ajax-api/2.0/mlflow/users/current", 404)}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class SeededRun:
    experiment_name: str
    experiment_id: str
    run_id: str


@dataclass
class Traffic:
    """Every response and failed request the page saw, as plain values kept at event time."""

    origin: str
    responses: list[tuple[str, str, int]] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("response", lambda r: self.responses.append((r.request.method, r.url, r.status)))
        page.on("requestfailed", lambda r: self.failures.append((r.method, r.url, r.failure or "")))

    def is_ours(self, url: str) -> bool:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" == self.origin

    def error_answers(self) -> list[tuple[str, str, int]]:
        return [(method, url, status) for method, url, status in self.responses if status >= 400 and (method, urlsplit(url).path, status) not in EXPECTED_MLFLOW_ANSWERS]

    def foreign_requests(self) -> list[str]:
        return [url for _, url, _ in self.responses if not self.is_ours(url) and not url.startswith("data:")]


@dataclass
class Ui:
    """A browser page on the app's public origin, with the traffic it caused."""

    page: Page
    origin: str
    traffic: Traffic

    def open(self, route: str) -> None:
        """Navigate to a UI route (the part after `#`)."""
        self.page.goto(f"{self.origin}/#{route}")

    def see(self, locator) -> None:
        expect(locator.first).to_be_visible(timeout=UI_TIMEOUT_MS)

    def post_json(self, path: str, body: dict) -> dict:
        """POST as the UI's own code does: a relative `fetch`, the browser sets `Origin`."""
        return self.page.evaluate(
            """async ([path, body]) => {
                const response = await fetch(path, {
                    method: 'POST',
                    headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify(body),
                });
                return {status: response.status, body: await response.text()};
            }""",
            [path, body],
        )


@pytest.fixture
def seeded_run(tracking) -> SeededRun:
    return seed_run(tracking, unique("browser"))


def seed_run(tracking, name: str) -> SeededRun:
    """An experiment with one finished run: a param, a metric over five steps, a text artifact."""
    import mlflow

    experiment_id = tracking.create_experiment(name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=RUN_NAME) as run:
        mlflow.log_param("lr", "0.1")
        for step, loss in enumerate(LOSSES):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.log_text(ARTIFACT_TEXT, ARTIFACT_PATH)
    return SeededRun(name, experiment_id, run.info.run_id)


@pytest.fixture
def ui(app) -> Iterator[Ui]:
    with browser_page(app) as page:
        yield page


@contextmanager
def browser_page(app, platform_edge: bool = False) -> Iterator[Ui]:
    """Chromium on the app's public origin (a Databricks Apps host name mapped to 127.0.0.1).

    `platform_edge`: the app runs as on Databricks Apps, where the platform's proxy ends TLS and the
    front takes the public scheme for https. Here the page is served over plain http, so each
    request says so, as a proxy serving http would (X-Forwarded-Proto: http)."""
    origin = f"http://{PUBLIC_HOST}:{app.port}"
    headers = {"X-Forwarded-Proto": "http"} if platform_edge else {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, extra_http_headers=headers)
            traffic = Traffic(origin)
            traffic.watch(page)
            yield Ui(page, origin, traffic)
        finally:
            browser.close()


def assert_no_error_shown(ui: Ui) -> None:
    """Neither MLflow's crash page nor an alert banner is on screen."""
    expect(ui.page.get_by_text("Something went wrong")).to_have_count(0)
    expect(ui.page.get_by_role("alert")).to_have_count(0)


def check_experiment_list(ui: Ui, run: SeededRun) -> None:
    ui.open("/experiments")
    ui.see(ui.page.get_by_role("link", name=run.experiment_name))
    assert_no_error_shown(ui)


def check_experiment_runs(ui: Ui, run: SeededRun) -> None:
    ui.open(f"/experiments/{run.experiment_id}")
    # The UI opens experiments in its GenAI view; runs are listed under "Model training".
    ui.page.get_by_role("button", name="Model training").click()
    ui.see(ui.page.get_by_role("link", name=RUN_NAME))
    assert_no_error_shown(ui)


def check_run_overview(ui: Ui, run: SeededRun, screenshot: Path) -> None:
    ui.open(f"/experiments/{run.experiment_id}/runs/{run.run_id}")
    ui.see(ui.page.get_by_role("heading", name=RUN_NAME))
    loss_row = ui.page.get_by_role("row").filter(has=ui.page.get_by_role("link", name="loss"))
    ui.see(loss_row)
    expect(loss_row.first).to_contain_text(f"{LOSSES[-1]:g}")
    assert_no_error_shown(ui)
    ui.page.screenshot(path=screenshot, full_page=True)


def check_metric_chart(ui: Ui) -> None:
    ui.page.get_by_role("tab", name="Model metrics").click()
    ui.see(ui.page.get_by_text(f"{RUN_NAME} (loss)"))  # the chart's legend
    assert_no_error_shown(ui)


def check_artifact_preview(ui: Ui) -> None:
    ui.page.get_by_role("tab", name="Artifacts").click()
    folder, file_name = ARTIFACT_PATH.split("/")
    ui.page.get_by_text(folder, exact=True).click()
    ui.page.get_by_text(file_name, exact=True).click()
    ui.see(ui.page.get_by_text(ARTIFACT_TEXT))
    assert_no_error_shown(ui)


def check_model_registry(ui: Ui) -> None:
    with ui.page.expect_response(lambda r: "/registered-models/search" in r.url, timeout=UI_TIMEOUT_MS) as listed:
        ui.open("/models")
    assert listed.value.status == 200
    ui.see(ui.page.get_by_role("heading", name="Registered Models"))
    assert_no_error_shown(ui)


def edit_run_description(ui: Ui, run: SeededRun, text: str) -> None:
    """Through the run page's own editor, as a user would; waits for MLflow to take the write."""
    ui.open(f"/experiments/{run.experiment_id}/runs/{run.run_id}")
    ui.page.get_by_role("button", name="Edit description").click()
    editor = ui.page.locator("textarea").first
    editor.fill(text)
    with ui.page.expect_response(lambda r: r.url.endswith("/runs/set-tag")) as saved:
        ui.page.get_by_role("button", name="Save").click()
    assert saved.value.status == 200
    ui.see(ui.page.get_by_text(text))


def test_ui_works_under_a_databricks_apps_host(ui: Ui, tracking, seeded_run: SeededRun, tmp_path):
    screenshot = tmp_path / "run-page.png"

    check_experiment_list(ui, seeded_run)
    check_experiment_runs(ui, seeded_run)
    check_run_overview(ui, seeded_run, screenshot)
    check_metric_chart(ui)
    check_artifact_preview(ui)
    check_model_registry(ui)

    # A write from the page's origin: the front must pass it although MLflow itself would refuse
    # this public Origin.
    created_name = unique("from-the-browser")
    answer = ui.post_json("ajax-api/2.0/mlflow/experiments/create", {"name": created_name})
    assert answer["status"] == 200, answer
    assert tracking.get_experiment_by_name(created_name) is not None

    description = unique("described in the browser")
    edit_run_description(ui, seeded_run, description)
    assert tracking.get_run(seeded_run.run_id).data.tags["mlflow.note.content"] == description

    assert screenshot.stat().st_size > 20_000
    assert ui.traffic.failures == []
    assert ui.traffic.error_answers() == []
    assert ui.traffic.foreign_requests() == []
