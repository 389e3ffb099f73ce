"""Causal language models: prefill and decode functions sharing a KV cache, generation, token parity."""
