"""The neutral lower layer: errors, atomic files and hashes, writing systems, model sources, bits per byte,
logging, progress and memory, shared by every package above it (see ARCHITECTURE.md)."""
