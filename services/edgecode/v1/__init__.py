"""Generated protobuf/gRPC code. Never edit by hand: run scripts/gen_protos.py."""
