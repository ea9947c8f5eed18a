//! Cross-crate tests (see `composition/`): they compose the provider crates with the
//! core the way the CLI and embedders do. Real peers only: a Docker engine with the
//! test images, and `moto_server` (see `scripts/test-env`).
