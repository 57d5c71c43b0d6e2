//! End-to-end tests of the emulated cluster lab, with plain tools.
