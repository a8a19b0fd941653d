"""phi3-llama-cpp-python-hooks: the example backend written against the original hook contract."""
