"""The soak: Glimpse under load for minutes, and what its garbage collector costs."""
