"""``hostwire gateway``: plug-ins for an app in any language, from one YAML file.

It owns the gateway's configuration (``config``), checking Standard Webhooks
signatures (``signature``), finding the webhook a received body is and the
object it is about (``routing``), receiving webhooks into the outbox
(``receiver``), forwarding the app's API behind the HTTP hooks (``proxy``) and
the ASGI app that serves them all (``server``). It sits above the layers it
wires, like ``Hostwire``: it imports ``hostwire._runtime``, ``_targets``,
``_hostapi``, ``_events``, ``_hooks``, and the plug-in list (``_config``,
``_pluginset``).
"""

from hostwire._gateway.config import GatewayConfig, load_gateway_config, parse_gateway_config
from hostwire._gateway.server import Gateway, create_gateway

__all__ = [
    "Gateway",
    "GatewayConfig",
    "create_gateway",
    "load_gateway_config",
    "parse_gateway_config",
]
