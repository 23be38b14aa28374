"""The OpenAI-compatible chat + transcription server (port 5000): `foundry-inference chat-server`.

Modules: settings (environment), engine (the small interface every engine implements, and the registry that picks one
from the model folder), genai (onnxruntime-genai chat with continuous batching), sampling, template (chat templates,
tools), textstream (stop sequences, tool-call detection), protocol (OpenAI request validation and response shapes),
whisper (faster-whisper transcription), handlers, metrics, server. See docs/chat-server.md.
"""
