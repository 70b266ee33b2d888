"""Forwarding (SPEC §7): every stored event pushed to the user's own apps as a Standard Webhook.

settings.py: the `forward:` config; signing.py: the webhook-signature header; payload.py: which
subscriptions an event goes to, and the request body, fixed when the event is stored.

outbox.py: the delivery rows the store writes in the event's own transaction; dispatcher.py: the
loop in each gateway process that leases, sends, records and retries them.
"""
