"""unbound in front of Glimpse: recovery after a Glimpse restart."""
