"""llama.cpp backend for GGUF models, through llama-cpp-python."""
