"""inbox: a real-time alert service on PostgreSQL (HTTP + WebSocket, the database as event bus)."""

__version__ = "1.0.0"
