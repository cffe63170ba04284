"""Webhooks over HTTP (admin token, writable service): register an endpoint
(the answer holds its secret, this once), list them (no secrets), remove one;
and the service's delivery worker (:func:`deliverer`), which starts and stops
with the app. Logic: :mod:`mimicry.moderation.webhooks` and
:mod:`mimicry.moderation.delivery`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from mimicry.errors import InputError, MimicryError
from mimicry.faces.http.context import Service
from mimicry.faces.http.deps import Admin, ServiceDep, Writable
from mimicry.moderation import webhooks
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.delivery import Deliverer, Policy

router = APIRouter()
log = logging.getLogger(__name__)


class Unavailable(MimicryError):
    """The moderation database could not be opened: nothing is recorded or sent."""

    code = "unavailable"
    http_status = 503


class WebhookIn(BaseModel):
    """The body of ``POST /v1/webhooks``."""

    url: str


def _mdb(svc: Service) -> ModerationDB:
    if svc.moderation is None:
        raise Unavailable("the index folder's moderation database could not be opened; webhooks are off")
    return svc.moderation


@router.post("/v1/webhooks", status_code=201, dependencies=[Writable])
async def add(request: Request, _actor: Admin, svc: ServiceDep) -> dict[str, Any]:
    """Registers an endpoint (admin; JSON ``{"url"}``: https, or http to
    loopback); answers ``{"id", "url", "secret"}``, the secret this once. It
    receives the events from now on."""
    try:
        body = WebhookIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InputError("expected a JSON body with a url (" + exc.errors()[0]["msg"] + ")") from None
    hook = await run_in_threadpool(webhooks.register, _mdb(svc), body.url)
    return hook.to_dict()


@router.get("/v1/webhooks", dependencies=[Writable])
def listed(_actor: Admin, svc: ServiceDep) -> dict[str, Any]:
    """The endpoints (admin), oldest first, with their deliveries' counts; never their secrets."""
    return {"webhooks": [w.to_dict() for w in webhooks.listed(_mdb(svc))]}


@router.delete("/v1/webhooks/{webhook_id}", dependencies=[Writable])
def remove(webhook_id: str, _actor: Admin, svc: ServiceDep) -> dict[str, Any]:
    """Removes an endpoint (admin) and its pending deliveries."""
    webhooks.remove(_mdb(svc), webhook_id)
    return {"removed": webhook_id}


def announce(svc: Service) -> None:
    """Enqueues ``artist.registered`` for registrations the audit log holds and
    no event announces yet; a failure is logged (the worker's next pass tries again)."""
    if svc.moderation is None:
        return
    try:
        webhooks.announce_registrations(svc.moderation, svc.index.audit)
    except Exception:  # noqa: BLE001 - the registration stands; the next pass announces it
        log.exception("webhooks: registrations not announced yet")


def deliverer(svc: Service) -> Deliverer:
    """The service's delivery worker: each pass first announces new
    registrations (those of the CLI too), then sends what is due."""
    assert svc.moderation is not None
    return Deliverer(svc.moderation, Policy.from_settings(svc.settings),
                     before=lambda: webhooks.announce_registrations(svc.moderation, svc.index.audit))
