# Pinned tool versions: the one place to change them. `make setup` rebuilds what changed.
# OPA: the newest v1.x on the Go module proxy when pinned.
OPA_VERSION := v1.22.3
REGAL_VERSION := v0.42.0
