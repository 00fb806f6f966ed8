"""OpenAI's Responses API (``/v1/responses``), translated onto the engine-neutral request, with a
bounded in-memory store of past responses for ``previous_response_id``."""
