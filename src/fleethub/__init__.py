"""fleethub: a backend for fleets of mobile robots."""

__version__ = "0.1.0"
