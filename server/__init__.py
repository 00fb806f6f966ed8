"""quantserve's HTTP server: the only package that speaks OpenAI JSON."""
