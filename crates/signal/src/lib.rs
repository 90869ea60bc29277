//! Sans-IO signaling for tsunagi (work in progress).
#![forbid(unsafe_code)]
