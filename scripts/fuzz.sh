#!/usr/bin/env bash
# Long fuzz run of every decoder that takes bytes from outside (the test suite
# runs each for a few hundred cases; this runs them for many more):
#   RPC frames and handshake messages   flint-rpc   frames_and_messages_from_strangers_never_panic
#   deploy messages                     flint-deploy deploy_messages_from_bytes_never_panic
#   driver/executor messages            flint-cluster cluster_messages_from_bytes_never_panic
#   task envelopes (signed)             flint-core  mutated_signed_envelopes_never_pass
#   shuffle/spill/block frames          flint-core  any_corruption_is_an_error_not_a_panic,
#                                                   a_truncated_stream_yields_a_prefix_then_an_error,
#                                                   any_flipped_bit_is_detected
#   fairscheduler.xml                   flint-core  any_text_parses_or_is_refused
#   properties files and values         flint-cli   properties_and_values_never_panic
# Usage: scripts/fuzz.sh [CASES]   (default 100000 per property; minutes each)
# A failing case is printed by proptest with its minimal input: add it as a
# plain unit test beside the property.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLINT_FUZZ_CASES="${1:-100000}"
export PROPTEST_MAX_SHRINK_ITERS=10000
cargo test --release -p flint-rpc --lib frames_and_messages_from_strangers_never_panic
cargo test --release -p flint-deploy --lib deploy_messages_from_bytes_never_panic
cargo test --release -p flint-cluster --lib cluster_messages_from_bytes_never_panic
cargo test --release -p flint-core --lib -- mutated_signed_envelopes_never_pass \
  any_corruption_is_an_error_not_a_panic a_truncated_stream_yields_a_prefix_then_an_error \
  any_flipped_bit_is_detected any_text_parses_or_is_refused
cargo test --release -p flint-cli --bin flint properties_and_values_never_panic
