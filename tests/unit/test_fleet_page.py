"""The dashboard page: given the command API token only in dev mode."""

from __future__ import annotations

from pathlib import Path

import faust

from agents_bridge.settings import DEV_API_TOKEN, load_settings
from app.operator_api import OperatorSurface


def page(tmp_path: Path, **settings: object) -> str:
    values = load_settings(data_dir=tmp_path, **settings)
    app = faust.App(f"page-{len(settings)}", broker="kafka://127.0.0.1:1", store="memory://")
    return OperatorSurface(app, values).dashboard_html()


def test_dev_mode_gives_the_page_the_token_and_production_does_not(tmp_path: Path) -> None:
    dev = page(tmp_path)
    assert f'name="trc-dev-token" content="{DEV_API_TOKEN}"' in dev
    production = page(
        tmp_path,
        production=True,
        api_token='s3cret"<token>',
        signing_keys="k1:a-production-signing-secret",
    )
    assert 'name="trc-dev-token" content=""' in production
    assert "s3cret" not in production
    assert "{{DEV_TOKEN}}" not in dev + production


def test_the_token_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    assert 'content="a&quot;b&lt;c&gt;"' in page(tmp_path, api_token='a"b<c>')
