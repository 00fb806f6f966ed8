"""One module per route family; each parses, picks the model, calls the engine and answers."""
