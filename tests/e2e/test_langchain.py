"""LangChain's ChatOpenAI against the real server, as a RAG app would call it."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.e2e.conftest import Server


def chat_model(server: Server, max_tokens: int = 40) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="sk-test",
        model="smollm2-135m-instruct",
        temperature=0,
        max_tokens=max_tokens,
    )  # type: ignore[call-arg]


def test_invoke_and_stream(server: Server) -> None:
    llm = chat_model(server)
    answer = llm.invoke("Which city is the capital of France?")
    assert "Paris" in str(answer.content)
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Which city is the capital of France?"))
    assert streamed == answer.content


def test_bind_tools_round_trip(server: Server) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return f"It is 31 degrees and sunny in {city}."

    llm = chat_model(server).bind_tools([get_weather], tool_choice="get_weather")
    question = HumanMessage("What is the weather in Paris?")
    first = llm.invoke([question])
    assert isinstance(first, AIMessage) and len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)
    result = get_weather.invoke(call)  # a ToolMessage answering that call id
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    answer = chat_model(server).bind_tools([get_weather], tool_choice="none").invoke([question, first, result])
    assert isinstance(answer, AIMessage) and not answer.tool_calls and str(answer.content)
    # streamed tool calls arrive as chunks LangChain can add up into the same call
    chunks = list(llm.stream([question]))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert [c["name"] for c in total.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]


def test_with_structured_output(server: Server) -> None:
    class City(BaseModel):
        """A city and the country it is in."""

        name: str = Field(max_length=40)
        country: str = Field(max_length=40)

    structured = chat_model(server, max_tokens=80).with_structured_output(City)
    city = structured.invoke("Paris is the capital of France. Give the city and its country.")
    assert isinstance(city, City) and city.name and city.country
