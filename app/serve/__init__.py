"""`longwatch serve`: an OpenAI-compatible HTTP API over one model, with live streams as resources.

Modules, one idea each: config (the `serve` section), errors (OpenAI error objects), schemas (request
and response bodies), security (API keys, source hosts, local paths, body size), events (a bus per
stream), registry (streams and chat videos, their capacity), textflow (stop strings, reasoning),
chat (a completion from memory), watches ("tell me when": yes/no conditions checked as patches arrive),
webhook (where a watch may POST), routes_* (the endpoints), app (the FastAPI factory), server (bind, run).
"""
