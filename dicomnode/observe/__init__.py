"""Observing a running node: in-process counters, and the HTTP endpoint that exposes them."""

from dicomnode.observe.endpoint import HttpEndpoint, start_http_endpoint

__all__ = ["HttpEndpoint", "start_http_endpoint"]
