//! Python bindings of PicoCache (work in progress).
