"""The llama.cpp engine: prompts, decoding (one item or a batch), the layer tap."""
