//! Standalone cluster manager (placeholder; see the open issue).
