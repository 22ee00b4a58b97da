"""relay: the realtime backend for collaborative coding interviews."""

__version__ = "0.1.0"
