"""Forwarding (SPEC §7): every stored event pushed to the user's own apps as a Standard Webhook.

settings.py: the `forward:` config; signing.py: the webhook-signature header; payload.py: which
subscriptions an event goes to, and the request body, fixed when the event is stored.

outbox.py: the delivery rows each store writes in the event's own transaction. Not yet here: the
dispatcher that sends them; until it is, deliveries wait in the outbox, and `check` and the
start-up say that nothing is sent.
"""

NOT_SENT_YET = "forward: deliveries are kept in the store's outbox, but this version does not send them yet"
