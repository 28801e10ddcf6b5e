"""
Glimpse: a service-discovery agent that answers DNS and HTTP questions about
the service topology kept in Consul, and takes host-scoped state from
providers.
"""

__version__ = "0.1.0"
