"""HTTP plumbing: the app factory, middleware, API keys, the error table, dependency getters."""
