"""phi3-llama-cpp-python: the example backend of docs/writing-a-backend.md (llama.cpp through llama-cpp-python)."""
