"""A confirmed message: stored with its call, then (optionally) POSTed and e-mailed.

The webhook body is JSON; ``X-Appliance-Signature: sha256=<hex>`` is the HMAC-SHA256 of the
exact body bytes with ``message_webhook_secret``, so the receiver can check it came from this
appliance (the same scheme as GitHub's webhooks). A failed POST (connection error, timeout, 5xx
or 429) is retried with doubling back-off; a 4xx other than 429 is final. The outcome is kept
on the message row (``delivered``, ``delivery_error``): the message itself is never lost.
The e-mail goes over SMTP (STARTTLS and login when configured) from a worker thread, since
smtplib blocks; a failure is logged and recorded the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
from email.message import EmailMessage
from typing import Any

import httpx

from appliance.config import Settings
from appliance.engines.base import CallStore
from appliance.messages.flow import TakenMessage

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Appliance-Signature"
FIRST_BACKOFF_S = 0.5
TIMEOUT_S = 5.0


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def deliver(store: CallStore, settings: Settings, call_sid: str,
                  taken: TakenMessage) -> dict[str, Any] | None:
    """Store the message, then send it to the webhook if one is configured."""
    row = await store.add_message(call_sid, name=taken.name,
                                  callback_number=taken.callback_number, message=taken.message)
    if row is None:
        return None
    log.info("call %s: message %s stored", call_sid, row["id"])
    errors = []
    if settings.message_webhook_url:
        errors.append(await post(settings, row))
    if settings.message_email_to and settings.smtp_host:
        errors.append(await asyncio.to_thread(send_email, settings, row))
    if errors:
        await store.message_delivered(int(row["id"]), "; ".join(e for e in errors if e))
    return row


def send_email(settings: Settings, row: dict[str, Any]) -> str:
    """Blocking: e-mail the message; "" on success, else why not (never the password)."""
    mail = EmailMessage()
    mail["Subject"] = f"Message from {row['name'] or 'a caller'}"
    mail["From"] = settings.message_email_from
    mail["To"] = settings.message_email_to
    mail.set_content(f"Name: {row['name']}\nCall back: {row['callback_number'] or 'unknown'}\n"
                     f"Call: {row['call_sid']}\n\n{row['message']}\n")
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_S) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(mail)
    except (smtplib.SMTPException, OSError) as err:
        log.warning("message %s not e-mailed: %s", row["id"], type(err).__name__)
        return f"e-mail: {type(err).__name__}"
    log.info("message %s e-mailed", row["id"])
    return ""


async def post(settings: Settings, row: dict[str, Any]) -> str:
    """POST the message; "" on success, else the last failure (logged without the secret)."""
    body = json.dumps({"type": "message", **row}, sort_keys=True).encode()
    headers = {"Content-Type": "application/json"}
    if settings.message_webhook_secret:
        headers[SIGNATURE_HEADER] = signature(settings.message_webhook_secret, body)
    error = ""
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for attempt in range(max(1, settings.message_webhook_attempts)):
            if attempt:
                await asyncio.sleep(FIRST_BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = await client.post(settings.message_webhook_url, content=body,
                                             headers=headers)
            except httpx.HTTPError as err:
                error = f"{type(err).__name__}: {err}"
                continue
            if response.is_success:
                log.info("message %s delivered to the webhook", row["id"])
                return ""
            error = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break
    log.warning("message %s not delivered to the webhook: %s", row["id"], error)
    return error
