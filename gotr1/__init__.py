"""gotr1: reasoning-driven text-to-image training (GoT-R1) for Janus-Pro."""

__version__ = "0.1.0"
