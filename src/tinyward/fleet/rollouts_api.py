"""The admin API's rollout endpoints (admin listener only, bearer token, audited).

``GET /v1/rollouts`` (every rollout with its tally), ``POST /v1/rollouts`` (start),
``GET /v1/rollouts/{id}``, ``POST /v1/rollouts/{id}/widen``, ``/halt``, ``/resume``.
Bodies are JSON objects (``application/json``); the answers are the rollout's status
(``docs/fleet-server.md``). Kept apart from :mod:`tinyward.fleet.server`, which mounts
them with :func:`add_rollout_routes`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.errors import BadRollout, RolloutConflict, UnknownRollout
from tinyward.fleet.guards import Refused
from tinyward.fleet.rollouts import RolloutBook, RolloutStatus
from tinyward.fleet.store import ReportStore


class FleetServer(Protocol):
    """What the endpoints use of :class:`tinyward.fleet.server.FleetServer` (a protocol,
    so that the two modules do not import each other)."""

    directory: FleetDirectory
    rollouts: RolloutBook
    _reader: ReportStore

    def _admin_of(self, request: web.Request) -> None: ...

    async def _admin_call(self, function: Callable[..., Any], *args: Any) -> Any: ...

_START_KEYS = frozenset({"component", "version", "target_path", "percent", "cohorts",
                         "halt_at", "min_reports"})
_Handler = Callable[[web.Request], Awaitable[web.Response]]


def add_rollout_routes(app: web.Application, server: FleetServer) -> None:
    """Mount the rollout endpoints on the admin application."""
    api = _RolloutApi(server)
    app.router.add_get("/v1/rollouts", _refusals(api.list))
    app.router.add_post("/v1/rollouts", _refusals(api.start))
    app.router.add_get("/v1/rollouts/{rollout_id}", _refusals(api.get))
    app.router.add_post("/v1/rollouts/{rollout_id}/widen", _refusals(api.widen))
    app.router.add_post("/v1/rollouts/{rollout_id}/halt", _refusals(api.halt))
    app.router.add_post("/v1/rollouts/{rollout_id}/resume", _refusals(api.resume))


def _refusals(handler: _Handler) -> _Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except UnknownRollout as error:
            raise Refused(404, "unknown_rollout", str(error)) from None
        except RolloutConflict as error:
            raise Refused(409, "rollout_conflict", str(error)) from None
        except BadRollout as error:
            raise Refused(400, "bad_rollout", str(error)) from None
    return wrapped


class _RolloutApi:
    def __init__(self, server: FleetServer) -> None:
        self._server = server

    def _statuses(self, rollout_id: str | None) -> list[RolloutStatus]:
        enrolled = [(d.device_id, d.cohort, d.revoked)
                    for d in self._server.directory.fleet.devices()]
        return self._server.rollouts.status(self._server._reader, enrolled, rollout_id)

    async def _answer(self, rollout_id: str) -> web.Response:
        (status,) = await self._server._admin_call(self._statuses, rollout_id)
        return web.json_response(status.to_json(), headers={"Cache-Control": "no-store"})

    async def _body(self, request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise Refused(415, "unsupported_content_type", "send a JSON object "
                          "(Content-Type: application/json)")
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise Refused(400, "malformed", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "malformed", "the body must be a JSON object")
        unknown = set(body) - allowed
        if unknown:
            raise Refused(400, "malformed", "unknown fields: "
                          + ", ".join(sorted(str(k)[:40] for k in unknown)[:8]))
        return body

    async def list(self, request: web.Request) -> web.Response:
        self._server._admin_of(request)
        statuses = await self._server._admin_call(self._statuses, None)
        return web.json_response({"rollouts": [s.to_json() for s in statuses]},
                                 headers={"Cache-Control": "no-store"})

    async def get(self, request: web.Request) -> web.Response:
        self._server._admin_of(request)
        return await self._answer(request.match_info["rollout_id"])

    async def start(self, request: web.Request) -> web.Response:
        self._server._admin_of(request)
        body = await self._body(request, _START_KEYS)
        cohorts = body.get("cohorts", [])
        if not isinstance(cohorts, list):
            raise BadRollout("cohorts is a list of names")
        for key in ("component", "version", "target_path"):
            if not isinstance(body.get(key), str):
                raise BadRollout(f"{key} is required (text)")
        book = self._server.rollouts
        made = await self._server._admin_call(functools.partial(
            book.start, body["component"], body["version"], body["target_path"],
            percent=body.get("percent"), cohorts=cohorts, halt_at=body.get("halt_at", 0.1),
            min_reports=body.get("min_reports", 5)))
        response = await self._answer(made.rollout_id)
        response.set_status(201)
        return response

    async def widen(self, request: web.Request) -> web.Response:
        self._server._admin_of(request)
        body = await self._body(request, frozenset({"percent"}))
        rollout_id = request.match_info["rollout_id"]
        await self._server._admin_call(self._server.rollouts.widen, rollout_id,
                                       body.get("percent"))
        return await self._answer(rollout_id)

    async def halt(self, request: web.Request) -> web.Response:
        self._server._admin_of(request)
        body = await self._body(request, frozenset({"reason"}))
        reason = body.get("reason", "halted by an operator")
        if not isinstance(reason, str) or not reason.isprintable():
            raise BadRollout("reason is one line of text")
        rollout_id = request.match_info["rollout_id"]
        await self._server._admin_call(self._server.rollouts.halt, rollout_id,
                                       f"operator: {reason[:160]}")
        return await self._answer(rollout_id)

    async def resume(self, request: web.Request) -> web.Response:
        self._server._admin_of(request)
        rollout_id = request.match_info["rollout_id"]
        await self._server._admin_call(self._server.rollouts.resume, rollout_id)
        return await self._answer(rollout_id)
