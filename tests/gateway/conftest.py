"""Fixtures of the gateway tests; the helpers they use are in kit.py."""

from gateway.kit import environ, fake_app, gateway_file, lago

__all__ = ["environ", "fake_app", "gateway_file", "lago"]
