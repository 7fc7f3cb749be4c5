//! The endpoints, one module per function, each of the same shape: parse
//! the request, apply it (the decisions are in the modules of the run), and
//! encode the answer. [`crate::app`] routes to them; each is built into its
//! own WebAssembly module by its cargo feature (`pkg/<function>/`).

pub mod finalize;
pub mod status;
pub mod sweep;
pub mod trigger;
