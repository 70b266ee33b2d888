"""Forwarding (SPEC §7): every stored event pushed to the user's own apps as a Standard Webhook.

settings.py: the `forward:` config; signing.py: the webhook-signature header; payload.py: which
subscriptions an event goes to, and the request body, fixed when the event is stored.

Not yet here: the outbox rows written with each event and the dispatcher that sends them. Until
they are, a `forward:` section is validated and `check` and the start-up say that nothing is sent.
"""

NOT_SENT_YET = "forward: is validated, but this version does not send webhooks yet (the outbox comes next)"
