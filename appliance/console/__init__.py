"""The operator console: accounts, pages, JSON API, metrics and probes, in the serving app.

``on_app_init`` is the one hook ``create_app`` calls: it adds the routes, the templates, the
OpenAPI schema (served behind the same auth as the API) and a lifespan that opens the console's
database connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.config.app import AppConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from appliance.auth.accounts import Accounts
from appliance.console import metrics
from appliance.console.api import api_router
from appliance.console.pages import TEMPLATES, pages_router, when
from appliance.console.security import access_guard
from appliance.console.state import Console
from appliance.store.retention import DAY_S, purge_calls

log = logging.getLogger(__name__)
STATIC = TEMPLATES.parent / "static"
FIRST_ADMIN = "appliance users add NAME --role admin"


@asynccontextmanager
async def console_lifespan(app: Litestar) -> AsyncIterator[None]:
    runtime = app.state.runtime
    console = Console(runtime.settings, runtime)
    await console.open()
    app.state.console = console
    if not await console.accounts(lambda a: a.has_admin()):
        log.warning("the operator console has no admin yet: create one with `%s`, then open "
                    "%s/console", FIRST_ADMIN, runtime.settings.public_base_url)
    purger = asyncio.create_task(purge_daily(console)) if runtime.settings.retention_days else None
    try:
        yield
    finally:
        if purger is not None:
            purger.cancel()
            await asyncio.gather(purger, return_exceptions=True)
        runtime.live.close()
        await console.close()


def audit_purge(accounts: Accounts, *, days: float, count: int, recordings: int) -> None:
    accounts.audit("system", "calls.purge", f"{days:g} days", calls=count, recordings=recordings)


async def purge_daily(console: Console) -> None:
    """The retention policy, applied at start-up and then every day."""
    days = console.settings.retention_days
    while True:
        sids = await purge_calls(console.call_log, days)
        recordings = await asyncio.to_thread(console.runtime.recordings.purge, days, sids)
        if sids or recordings:
            await console.accounts(functools.partial(audit_purge, days=days, count=len(sids),
                                                     recordings=recordings))
            log.info("retention: purged %d call(s) and %d recording(s) older than %g days",
                     len(sids), recordings, days)
        await asyncio.sleep(DAY_S)


def template_engine(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["when"] = when


def on_app_init(config: AppConfig) -> AppConfig:
    config.route_handlers += [
        api_router(), pages_router(), metrics.metrics, metrics.live, metrics.ready,
        create_static_files_router("/console/static", [STATIC], include_in_schema=False),
    ]
    config.template_config = TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine,
                                            engine_callback=template_engine)
    config.openapi_config = OpenAPIConfig(
        title="appliance console API", version="1", path="/api/schema",
        render_plugins=[JsonRenderPlugin()],  # no UI: it would load scripts from a CDN
        openapi_router=Router("/api/schema", guards=[access_guard], route_handlers=[]),
    )
    config.lifespan = [*config.lifespan, console_lifespan]
    return config
