"""Real-time signalling: Socket.IO rooms, presence, negotiation, chat.

Imports neither ``server`` nor ``recordings``; what it needs from the
application it declares as ``typing.Protocol``s (DESIGN.md §3).
"""
