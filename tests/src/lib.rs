//! Cross-crate tests: they compose the provider crates with the core the way the CLI
//! and embedders do. They arrive with the providers.
