"""``POST /v1/embeddings`` for any embedding model: the chat route's lifecycle and answer handling (the
answer is the adapter's OpenAI body, forwarded or translated), with the embeddings dialect's parsing and
its own usage-record mode."""

from __future__ import annotations

from gateway.accounting import Mode
from gateway.dialects.embeddings import parse_embeddings
from gateway.governance import Principal
from gateway.routes.asgi import Receive, Scope, Send, header
from gateway.routes.lifecycle import PROJECT_HEADER, Parsed, serve
from gateway.routes.unified import ChatDialect
from gateway.state import GatewayState


class EmbeddingsDialect(ChatDialect):
    mode: Mode = "embeddings"

    async def parse(self, body: bytes, scope: Scope, principal: Principal) -> Parsed:
        call = parse_embeddings(body)
        project = call.request.project_id
        return Parsed(call=call, requested_model=call.request.model, body=body,
                      project=project if isinstance(project, str) and project else header(scope, PROJECT_HEADER))


EMBEDDINGS = EmbeddingsDialect()


async def create_embeddings(state: GatewayState, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
    """POST /v1/embeddings, as plain ASGI like /v1/chat/completions."""
    await serve(EMBEDDINGS, state, scope, receive, send, rid)
