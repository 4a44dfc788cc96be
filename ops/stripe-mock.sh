#!/usr/bin/env bash
# Installs stripe-mock, the stateless Stripe API double the billing tests
# run against, unless one is already on PATH or in $(go env GOPATH)/bin.
# Idempotent: a second run takes milliseconds. The billing tests run the
# same install themselves when it is missing; `make tools` runs this first
# so that they do not have to.
set -euo pipefail
VERSION="${STRIPE_MOCK_VERSION:-v0.203.0}"
if command -v stripe-mock >/dev/null 2>&1; then
  exit 0
fi
GOBIN_DIR="$(go env GOBIN)"
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
if [ -x "$GOBIN_DIR/stripe-mock" ]; then
  exit 0
fi
echo "installing stripe-mock $VERSION into $GOBIN_DIR"
go install "github.com/stripe/stripe-mock@$VERSION"
