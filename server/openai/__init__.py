"""The OpenAI wire format: request models, translation to engine requests, response and SSE rendering."""
