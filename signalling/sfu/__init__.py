"""The media plane: aiortc peers forwarding encoded media (no Socket.IO here)."""
