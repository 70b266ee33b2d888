"""status-gateway: verified, normalized SMS delivery-status callbacks."""

__version__ = "0.1.0"
