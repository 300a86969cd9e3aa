"""Engines: one interface (base.py), several backends, chosen in registry.py."""
