"""Inbound dialects: each client format the gateway speaks (OpenAI chat, Anthropic Messages), turned into
the common call the pipeline runs, and the common answer (or stream) turned back into that format.

The outbound side, one adapter per provider kind, is in ``gateway/providers/``: how a request in one
dialect reaches a provider is the dialect's module plus the provider's adapter."""
