"""After the adaptation: GGUF files for llama.cpp and Ollama, and a chat vector that brings instruction following
back to the adapted base."""
