"""Device farm: anychip artifacts run, verified and benchmarked on remote hosts through TVM RPC."""
