//! Storage quantities both ways: kubesim's (the API server validates PVC sizes with them too).

pub use kubesim::quantity::{bytes_quantity, quantity_bytes};
