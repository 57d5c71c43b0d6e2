//! Pure packet dissection for dye: no I/O, no privileges, never panics on input.
