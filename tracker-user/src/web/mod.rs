//! What tracker shows in a browser: [`svg`] charts rendered by tracker itself, the
//! self-contained report [`page`], and the [`dashboard`] the daemon serves, built on both.

pub mod dashboard;
pub mod page;
pub mod svg;
