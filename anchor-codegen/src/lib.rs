//! Code generation (see issue 3).
