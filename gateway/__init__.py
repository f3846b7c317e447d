"""gateway: a self-hosted LLM gateway speaking the OpenAI Chat Completions API."""

__version__ = "0.1.0"
