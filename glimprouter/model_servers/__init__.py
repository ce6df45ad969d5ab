"""Talking to the model servers: ChatOpenAI clients bound to the vLLM endpoints and the requests
they send (`client`), a step streamed and glimpsed from its first token (`streaming`), the
start-up check of each endpoint (`startup`), and the translation of a server's errors into one
line naming the setting to fix (`errors`)."""
