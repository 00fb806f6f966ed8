"""LangChain's ChatOpenAI against the real server, as a RAG app would call it."""

from __future__ import annotations

from langchain_openai import ChatOpenAI

from tests.e2e.conftest import Server


def chat_model(server: Server) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{server.base_url}/v1", api_key="sk-test", model="smollm2-135m-instruct", temperature=0, max_tokens=40
    )  # type: ignore[call-arg]


def test_invoke_and_stream(server: Server) -> None:
    llm = chat_model(server)
    answer = llm.invoke("Which city is the capital of France?")
    assert "Paris" in str(answer.content)
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Which city is the capital of France?"))
    assert streamed == answer.content
